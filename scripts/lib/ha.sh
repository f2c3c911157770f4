# shellcheck shell=bash
# A real Home Assistant for the tests (issue 12), headless, on loopback:
#   . scripts/lib/ha.sh
#   ha_install                     (scripts/setup --test: the pinned version
#                                   in a Debian forky root, below)
#   ha_start DIR BROKER_PORT       (first start: writes the config, a token,
#                                   and the MQTT config entry)
#   ha_get /api/states/light.x     ha_post /api/services/light/turn_on JSON
#   ha_state ENTITY [ATTRIBUTE]    ha_ws JSON    ha_issues    ha_stop
# It needs common.sh (sourced here). Home Assistant's log is DIR/ha.log.

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The newest Home Assistant on PyPI (2026.11.0, December 2026). It needs
# Python 3.14.2 or later, which this machine's Debian (bookworm, Python 3.11)
# and pyenv (3.13.0) lack: it runs in a Debian forky root (debootstrap, as
# scripts/lib/trixie.sh makes trixie's) with forky's python3.14, in a venv
# at /opt/homeassistant there. Home Assistant runs chrooted in a mount
# namespace of its own, on the host's network: loopback is the same, so it
# reaches the test's broker and the test reaches its API as before.
PIMQTT_HA_VERSION=2026.11.0
PIMQTT_HA_SUITE=forky
PIMQTT_HA_ROOT="${PIMQTT_HA_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/pi-mqtt/homeassistant-$PIMQTT_HA_VERSION}"
# g++ and python3.14-dev: two requirements of the always-loaded voice
# integrations (pymicro-vad, pyspeex-noise) have no wheel for Python 3.14
# on PyPI and are built from source.
PIMQTT_HA_PACKAGES=(python3.14 python3.14-venv python3.14-dev g++ ca-certificates)
# The integrations the tests configure (ha_prepare.py), besides those Home
# Assistant always loads: their requirements are installed too.
PIMQTT_HA_INTEGRATIONS=(mqtt api config http diagnostics recorder history)
# What the root is made of; a root made from another list (or unfinished)
# is made again from nothing.
PIMQTT_HA_STAMP="$PIMQTT_HA_SUITE ${PIMQTT_HA_PACKAGES[*]} homeassistant==$PIMQTT_HA_VERSION ${PIMQTT_HA_INTEGRATIONS[*]} and (after_)dependencies"

ha_pid="" ha_port="" ha_token="" ha_dir=""

# trixie_mirror: the Debian mirror of this machine's apt sources.
. "$(dirname "${BASH_SOURCE[0]}")/trixie.sh"

# Runs COMMAND... in the root as root, in a mount namespace of its own (its
# mounts vanish with it): /proc, /dev, and DIR (if not empty) bound at the
# same path inside, so paths given to Home Assistant need no translation.
# With ha_exec=exec (in a subshell) every step execs: the subshell's pid
# becomes COMMAND's, so a signal to it reaches Home Assistant itself.
ha_run() { # DIR COMMAND...
  local bind="$1"
  shift
  ${ha_exec:-} unshare --mount --propagation private -- /bin/bash -c '
    set -e
    r="$1"; dir="$2"; shift 2
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    if [[ -n "$dir" ]]; then mkdir -p "$r$dir"; mount --bind "$dir" "$r$dir"; fi
    exec chroot "$r" /usr/bin/env -i PATH=/opt/homeassistant/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/host-ca.crt PIP_CERT=/etc/ssl/host-ca.crt \
      PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
  ' ha-run "$PIMQTT_HA_ROOT" "$bind" "$@"
}

# The requirements of what Home Assistant always loads (its core and default
# integrations, e.g. the frontend package) and of $PIMQTT_HA_INTEGRATIONS,
# with their dependencies and after_dependencies,
# read from the installed manifests: the tests start it with --skip-pip, so
# nothing may be left to install at run time.
ha_requirements() {
  ha_run "" /opt/homeassistant/bin/python - "${PIMQTT_HA_INTEGRATIONS[@]}" <<'PY'
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
        # after_dependencies: imported when present (mqtt's config flow
        # imports hassio's client library, aiohasupervisor).
        todo.update(m.get("dependencies", []) + m.get("after_dependencies", []))
print("\n".join(sorted(reqs)))
PY
}

# Makes the forky root and installs Home Assistant $PIMQTT_HA_VERSION and
# those requirements into its venv. Idempotent: a stamp file records a
# complete install of this list. Cold: 3.5 to 5.5 minutes here (debootstrap
# ~30 s, python3.14 and g++ ~20 s, Home Assistant and its requirements from
# PyPI, two of them compiled, the rest), about 1.7 GB.
# Needs root (debootstrap, chroot); without, it says so and the Home
# Assistant suite is skipped.
ha_install() {
  local dir="$PIMQTT_HA_ROOT" prog=setup
  [[ -f "$dir/.pi-mqtt-complete" && "$(cat "$dir/.pi-mqtt-complete")" == "$PIMQTT_HA_STAMP" ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: Home Assistant $PIMQTT_HA_VERSION runs in a Debian $PIMQTT_HA_SUITE root, which needs root" >&2
    echo "       (debootstrap, chroot): run scripts/setup --test as root; the Home Assistant test will be skipped" >&2
    return 0
  fi
  local t0=$SECONDS
  echo "setup: installing Home Assistant $PIMQTT_HA_VERSION into a Debian $PIMQTT_HA_SUITE root, $dir (a few minutes)"
  debian_root "$PIMQTT_HA_SUITE" "$dir" || return 1
  # The root fetches as this machine does: its DNS, the CA bundle it trusts
  # (a proxy's, say) and its apt settings for fetching (Acquire::, e.g. how
  # old a mirror's Release file may be).
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
  mkdir -p "$dir/etc/ssl"
  cp -L "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$dir/etc/ssl/host-ca.crt"
  local f
  for f in $(grep -l 'Acquire::' /etc/apt/apt.conf.d/* 2>/dev/null); do
    cp "$f" "$dir/etc/apt/apt.conf.d/50host-${f##*/}"
  done
  if ! ha_run "" /bin/sh -c '
      set -e
      v="$1"; shift
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
      apt-get clean
      python3.14 -m venv /opt/homeassistant
      pip install -q --no-cache-dir "homeassistant==$v"
    ' sh "$PIMQTT_HA_VERSION" "${PIMQTT_HA_PACKAGES[@]}" > "$dir/.install.log" 2>&1; then
    echo "setup: installing Home Assistant in the $PIMQTT_HA_SUITE root failed; the end of $dir/.install.log:" >&2
    tail -n 15 "$dir/.install.log" >&2
    return 1
  fi
  local reqs
  mapfile -t reqs < <(ha_requirements)
  if ! ha_run "" pip install -q --no-cache-dir "${reqs[@]}" >> "$dir/.install.log" 2>&1; then
    echo "setup: installing Home Assistant's requirements failed; the end of $dir/.install.log:" >&2
    tail -n 15 "$dir/.install.log" >&2
    return 1
  fi
  echo "$PIMQTT_HA_STAMP" > "$dir/.pi-mqtt-complete"
  echo "setup: Home Assistant $PIMQTT_HA_VERSION ready on $(ha_run "" python --version) in $((SECONDS - t0)) s ($dir)"
}

# True if Home Assistant $PIMQTT_HA_VERSION is installed (and can be run:
# the root needs root).
ha_installed() {
  [[ -f "$PIMQTT_HA_ROOT/.pi-mqtt-complete" && "$(cat "$PIMQTT_HA_ROOT/.pi-mqtt-complete")" == "$PIMQTT_HA_STAMP" \
    && $(id -u) -eq 0 ]]
}

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

# Starts Home Assistant on a free loopback port with config directory DIR
# (an absolute path), its MQTT integration on the broker at
# 127.0.0.1:BROKER_PORT with MQTT 5 (what Home Assistant asks for since
# 2026.6 and will only speak from 2027.1); returns once its API answers and
# the MQTT integration is loaded (within 120 s). On the first start in DIR it
# writes configuration.yaml and a long-lived token (ha_prepare.py), and adds
# the MQTT config entry through the REST config flow (recent versions take
# the broker only as a config entry, not YAML).
# Sets ha_pid, ha_port, ha_token, ha_dir.
ha_start() { # DIR BROKER_PORT
  ha_dir="$1"
  local broker_port="$2"
  [[ "$ha_dir" == /* ]] || { echo "ha_start: $ha_dir is not an absolute path" >&2; return 1; }
  ha_installed || { echo "Home Assistant $PIMQTT_HA_VERSION is not installed: run scripts/setup --test (as root)" >&2; return 1; }
  if [[ ! -f "$ha_dir/token" ]]; then
    ha_port="$(free_port)"
    mkdir -p "$ha_dir/config"
    ha_run "$ha_dir" python - "$ha_dir/config" "$ha_port" < "$PIMQTT_ROOT/scripts/lib/ha_prepare.py" > "$ha_dir/token.new" \
      || { echo "Home Assistant: scripts/lib/ha_prepare.py failed (above)" >&2; return 1; }
    echo "$ha_port" > "$ha_dir/port"
    mv "$ha_dir/token.new" "$ha_dir/token"
  fi
  ha_port="$(cat "$ha_dir/port")"
  ha_token="$(cat "$ha_dir/token")"
  if port_open 127.0.0.1 "$ha_port"; then
    echo "Home Assistant: port $ha_port is in use" >&2
    return 1
  fi
  (ha_exec=exec; ha_run "$ha_dir" hass -c "$ha_dir/config" --skip-pip) >>"$ha_dir/ha.log" 2>&1 &
  ha_pid=$!
  wait_for 120 ha_get /api/ >/dev/null 2>&1 \
    || { echo "Home Assistant did not answer on port $ha_port within 120 s; $ha_dir/ha.log:" >&2; tail -20 "$ha_dir/ha.log" >&2; return 1; }
  if ! ha_get /api/config/config_entries/entry 2>/dev/null | grep -q '"domain":"mqtt"'; then
    local flow answer
    flow="$(ha_post /api/config/config_entries/flow '{"handler": "mqtt"}' \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["flow_id"])')" || return 1
    # (other_settings: the form's collapsed section, whose required keys
    # the UI fills with these defaults.)
    answer="$(ha_post "/api/config/config_entries/flow/$flow" "{\"broker\": \"127.0.0.1\", \"port\": $broker_port,
      \"protocol\": \"5\", \"other_settings\": {\"set_client_cert\": false, \"set_ca_cert\": \"off\", \"transport\": \"tcp\"}}" 2>&1)"
    [[ "$answer" == *'"type":"create_entry"'* ]] \
      || { echo "Home Assistant: the MQTT config flow failed: $answer" >&2; return 1; }
  fi
  wait_for 60 ha_mqtt_loaded \
    || { echo "Home Assistant: the MQTT integration did not load; $ha_dir/ha.log:" >&2; tail -20 "$ha_dir/ha.log" >&2; return 1; }
}

# Sends one websocket command (JSON, without its id) to the running Home
# Assistant and prints the result (JSON); fails on an error answer. The REST
# API has no repairs or registry listing: the websocket API has.
ha_ws() { # JSON
  ha_run "" python - "$ha_port" "$ha_token" "$1" < "$PIMQTT_ROOT/scripts/lib/ha_ws.py"
}

# Prints Home Assistant's active repair issues, one "domain issue_id" a
# line: an empty output is a clean bill.
ha_issues() {
  ha_ws '{"type": "repairs/list_issues"}' | python3 -c '
import json, sys
for i in json.load(sys.stdin)["issues"]:
    if not i.get("ignored") and not i.get("dismissed_version"):
        print(i["domain"], i["issue_id"])'
}

# Stops Home Assistant (SIGTERM, then SIGKILL after 30 s).
ha_stop() {
  stop_pid "$ha_pid" 30
  ha_pid=""
}
