"""Prepares a Home Assistant config directory for a headless test run.

Run with the Python of Home Assistant's venv (scripts/lib/ha.sh does):
    python ha_prepare.py CONFIG_DIR HTTP_PORT
It writes configuration.yaml (no default_config: only what the MQTT
integration and the REST API need), creates an admin user with a long-lived
access token through Home Assistant's own auth store (so the format is the
installed version's, not a copy of it), saves it, stores the HTTP server's
address (127.0.0.1:HTTP_PORT) in its HTTP config store, and prints the token.

Why not onboarding through the REST API: it needs several round trips (user,
auth code, token, then a websocket call for a long-lived token) and a running
Home Assistant; this is one offline step before the start.
"""

import asyncio
import pathlib
import sys
from datetime import timedelta

from homeassistant.auth import auth_manager_from_config
from homeassistant.auth.const import GROUP_ID_ADMIN
from homeassistant.auth.models import TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN
from homeassistant.components.http.config import HTTPConfigStore
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry

CONFIG = """\
# Written by scripts/lib/ha_prepare.py for a test: no default_config, so only
# the integrations below (and Home Assistant's always-loaded core ones) start.
homeassistant:
  name: pi-mqtt test
  latitude: 52.0
  longitude: 5.0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: NL
api:
config:
# The MQTT config entry's diagnostics say which protocol it speaks; the
# recorder and history show that an entity moved to device discovery keeps
# its past states (commit every second: the test reads them back at once).
diagnostics:
recorder:
  commit_interval: 1
history:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
    # Loaded with the frontend; libturbojpeg is not needed without cameras.
    homeassistant.components.camera.img_util: critical
"""


async def main(config_dir: str, port: int) -> None:
    path = pathlib.Path(config_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "configuration.yaml").write_text(CONFIG)
    hass = HomeAssistant(config_dir)
    # The auth store reads the device registry (in 2026.11): set it up and
    # load it (empty) first, as bootstrap does.
    device_registry.async_setup(hass)
    await device_registry.async_load(hass)
    hass.auth = await auth_manager_from_config(hass, [], [])
    user = await hass.auth.async_create_user("pi-mqtt test", group_ids=[GROUP_ID_ADMIN])
    refresh = await hass.auth.async_create_refresh_token(
        user,
        client_name="pi-mqtt test",
        token_type=TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN,
        access_token_expiration=timedelta(days=3650),
    )
    token = hass.auth.async_create_access_token(refresh)
    store = hass.auth._store  # noqa: SLF001 - flush now, not at a shutdown
    await store._store.async_save(store._data_to_save())  # noqa: SLF001
    # The HTTP server's address and port: in Home Assistant's own store, as
    # its UI would save them (`http:` in YAML raises a deprecation repair in
    # 2026.11, to break in 2027.2). What its YAML import does (validated,
    # staged as pending), then confirmed as the UI's "keep" does.
    http = HTTPConfigStore(hass)
    await http.async_migrate_yaml({"server_host": ["127.0.0.1"], "server_port": port})
    await http.async_promote_pending()
    print(token)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: ha_prepare.py CONFIG_DIR HTTP_PORT")
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
