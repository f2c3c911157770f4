"""Sends one command to Home Assistant's websocket API and prints its result.

Run with the Python of Home Assistant's venv (scripts/lib/ha.sh's ha_ws):
    python ha_ws.py HTTP_PORT TOKEN COMMAND_JSON
Why the websocket API: repairs, and the entity and device registries, have
no REST endpoint. aiohttp is one of Home Assistant's own requirements.
"""

import asyncio
import json
import sys

import aiohttp


async def main(port: int, token: str, command: dict) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{port}/api/websocket") as ws:
            await ws.receive_json()  # auth_required
            await ws.send_json({"type": "auth", "access_token": token})
            if (answer := await ws.receive_json())["type"] != "auth_ok":
                print(f"ha_ws: authentication failed: {answer}", file=sys.stderr)
                return 1
            await ws.send_json({"id": 1, **command})
            while (answer := await ws.receive_json()).get("id") != 1:
                pass
    if not answer.get("success"):
        print(f"ha_ws: {command['type']}: {answer.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(answer["result"]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: ha_ws.py HTTP_PORT TOKEN COMMAND_JSON")
    sys.exit(asyncio.run(main(int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]))))
