# shellcheck shell=bash
# A real Home Assistant for the tests (issue 12), headless, on loopback:
#   . scripts/lib/ha.sh
#   ha_install                     (scripts/setup --test: the pinned venv)
#   ha_start DIR BROKER_PORT       (first start: writes the config, a token,
#                                   and the MQTT config entry)
#   ha_get /api/states/light.x     ha_post /api/services/light/turn_on JSON
#   ha_state ENTITY [ATTRIBUTE]    ha_stop
# It needs common.sh (sourced here). Home Assistant's log is DIR/ha.log.

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The newest Home Assistant that installs on a Python this machine has: HA
# 2025.5 and later need Python 3.13.2, pyenv here has 3.13.0.
PIMQTT_HA_VERSION=2025.4.4
PIMQTT_HA_PYTHON="${PIMQTT_HA_PYTHON:-$HOME/.pyenv/versions/3.13.0/bin/python}"
PIMQTT_HA_DIR="${PIMQTT_HA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pi-mqtt/homeassistant-$PIMQTT_HA_VERSION}"

ha_pid="" ha_port="" ha_token="" ha_dir=""

# The requirements of what Home Assistant always loads (its core and default
# integrations, e.g. the frontend package) and of mqtt, api and config, read
# from the installed manifests: the tests start it with --skip-pip (and only
# PyPI is reachable), so nothing may be left to install at run time.
ha_requirements() {
  "$PIMQTT_HA_DIR/bin/python" - mqtt api config http <<'PY'
import json, pathlib, sys
from homeassistant import bootstrap
import homeassistant.components as components
base = pathlib.Path(components.__file__).parent
todo = set(bootstrap.CORE_INTEGRATIONS) | set(bootstrap.LOGGING_AND_HTTP_DEPS_INTEGRATIONS)
todo |= set(bootstrap.DEFAULT_INTEGRATIONS) | set(sys.argv[1:])
seen, reqs = set(), set()
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.add(name)
    manifest = base / name / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        reqs.update(m.get("requirements", []))
        todo.update(m.get("dependencies", []))
print("\n".join(sorted(reqs)))
PY
}

# Installs Home Assistant $PIMQTT_HA_VERSION and those requirements into a
# venv of its own (idempotent: a marker file records a complete install).
ha_install() {
  local dir="$PIMQTT_HA_DIR"
  [[ -f "$dir/.pi-mqtt-complete" ]] && return 0
  if [[ ! -x "$PIMQTT_HA_PYTHON" ]]; then
    echo "setup: $PIMQTT_HA_PYTHON is missing: Home Assistant $PIMQTT_HA_VERSION needs Python 3.13" >&2
    echo "       (set PIMQTT_HA_PYTHON to one); the Home Assistant test will be skipped" >&2
    return 0
  fi
  echo "setup: installing Home Assistant $PIMQTT_HA_VERSION into $dir (a few minutes)"
  rm -rf "$dir"
  "$PIMQTT_HA_PYTHON" -m venv "$dir"
  "$dir/bin/pip" install -q "homeassistant==$PIMQTT_HA_VERSION"
  local reqs
  mapfile -t reqs < <(ha_requirements)
  "$dir/bin/pip" install -q "${reqs[@]}"
  touch "$dir/.pi-mqtt-complete"
  echo "setup: Home Assistant $PIMQTT_HA_VERSION ready ($dir)"
}

# True if the pinned Home Assistant is installed.
ha_installed() { [[ -f "$PIMQTT_HA_DIR/.pi-mqtt-complete" ]]; }

# GET PATH from the running Home Assistant's REST API; prints the body,
# fails on an HTTP error.
ha_get() { # PATH
  curl -sSf -H "Authorization: Bearer $ha_token" "http://127.0.0.1:$ha_port$1"
}

# POST JSON to PATH.
ha_post() { # PATH JSON
  curl -sSf -H "Authorization: Bearer $ha_token" -H 'Content-Type: application/json' \
    -X POST -d "$2" "http://127.0.0.1:$ha_port$1"
}

# Prints ENTITY's state (or ATTRIBUTE's value, JSON for non-strings); fails
# if Home Assistant does not know the entity.
ha_state() { # ENTITY [ATTRIBUTE]
  local body
  body="$(ha_get "/api/states/$1" 2>/dev/null)" || return 1
  python3 -c '
import json, sys
s = json.loads(sys.argv[1])
v = s["attributes"].get(sys.argv[2]) if len(sys.argv) > 2 else s["state"]
print(v if isinstance(v, str) else json.dumps(v))' "$body" "${@:2}"
}

# True if ENTITY's state (or ATTRIBUTE) is VALUE.
ha_is() { # ENTITY VALUE [ATTRIBUTE]
  [[ "$(ha_state "$1" "${@:3}" 2>/dev/null)" == "$2" ]]
}

# True if Home Assistant's MQTT config entry is loaded.
ha_mqtt_loaded() {
  ha_get /api/config/config_entries/entry 2>/dev/null | python3 -c '
import json, sys
sys.exit(not any(e["domain"] == "mqtt" and e["state"] == "loaded" for e in json.load(sys.stdin)))'
}

# Starts Home Assistant on a free loopback port with config directory DIR,
# its MQTT integration on the broker at 127.0.0.1:BROKER_PORT; returns once
# its API answers and the MQTT integration is loaded (within 120 s). On the
# first start in DIR it writes configuration.yaml and a long-lived token
# (ha_prepare.py), and adds the MQTT config entry through the REST config
# flow (recent versions take the broker only as a config entry, not YAML).
# Sets ha_pid, ha_port, ha_token, ha_dir.
ha_start() { # DIR BROKER_PORT
  ha_dir="$1"
  local broker_port="$2" py="$PIMQTT_HA_DIR/bin/python"
  ha_installed || { echo "Home Assistant $PIMQTT_HA_VERSION is not installed: run scripts/setup --test" >&2; return 1; }
  if [[ ! -f "$ha_dir/token" ]]; then
    ha_port="$(free_port)"
    mkdir -p "$ha_dir/config"
    "$py" "$PIMQTT_ROOT/scripts/lib/ha_prepare.py" "$ha_dir/config" "$ha_port" > "$ha_dir/token.new"
    echo "$ha_port" > "$ha_dir/port"
    mv "$ha_dir/token.new" "$ha_dir/token"
  fi
  ha_port="$(cat "$ha_dir/port")"
  ha_token="$(cat "$ha_dir/token")"
  if port_open 127.0.0.1 "$ha_port"; then
    echo "Home Assistant: port $ha_port is in use" >&2
    return 1
  fi
  "$PIMQTT_HA_DIR/bin/hass" -c "$ha_dir/config" --skip-pip >>"$ha_dir/ha.log" 2>&1 &
  ha_pid=$!
  wait_for 120 ha_get /api/ >/dev/null 2>&1 \
    || { echo "Home Assistant did not answer on port $ha_port within 120 s; $ha_dir/ha.log:" >&2; tail -20 "$ha_dir/ha.log" >&2; return 1; }
  if ! ha_get /api/config/config_entries/entry 2>/dev/null | grep -q '"domain":"mqtt"'; then
    local flow
    flow="$(ha_post /api/config/config_entries/flow '{"handler": "mqtt"}' \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["flow_id"])')" || return 1
    ha_post "/api/config/config_entries/flow/$flow" "{\"broker\": \"127.0.0.1\", \"port\": $broker_port}" \
      | grep -q '"type":"create_entry"' || { echo "Home Assistant: the MQTT config flow failed" >&2; return 1; }
  fi
  wait_for 60 ha_mqtt_loaded \
    || { echo "Home Assistant: the MQTT integration did not load; $ha_dir/ha.log:" >&2; tail -20 "$ha_dir/ha.log" >&2; return 1; }
}

# Stops Home Assistant (SIGTERM, then SIGKILL after 30 s).
ha_stop() {
  stop_pid "$ha_pid" 30
  ha_pid=""
}
