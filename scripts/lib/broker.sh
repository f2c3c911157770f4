# shellcheck shell=bash
# What scripts/broker and scripts/broker-secure share: their options, the
# checks before starting, the configuration made from a template in
# mosquitto/, and the start. A script sets `prog` and the defaults (port,
# ws_port; `secure` too if it takes --secure DIR), then calls
# broker_options "$@", and at last broker_run.
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

data="" bind="127.0.0.1"

# Parses --port P, --ws-port W, --data DIR, --lan, --help (and --secure DIR
# where the script has a `secure` default); checks the ports.
broker_options() {
  while (($#)); do
    case "$1" in
      --port) opt_value port "$@"; shift 2 ;;
      --ws-port) opt_value ws_port "$@"; shift 2 ;;
      --data) opt_value data "$@"; shift 2 ;;
      --secure) [[ -v secure ]] || break; opt_value secure "$@"; shift 2 ;;
      --lan) bind=""; shift ;;
      --help|-h) usage; exit 0 ;;
      *) break ;;
    esac
  done
  if (($#)); then echo "$prog: unknown option $1 (try --help)" >&2; exit 2; fi
  local p
  for p in "$port" "$ws_port"; do
    [[ "$p" =~ ^[0-9]+$ ]] && ((p > 0 && p < 65536)) || { echo "$prog: bad port $p" >&2; exit 2; }
  done
  command -v "$(mosquitto_bin)" >/dev/null \
    || { echo "$prog: $(mosquitto_bin) is not installed: run scripts/setup" >&2; exit 2; }
  [[ "$port" != "$ws_port" ]] || { echo "$prog: --port and --ws-port are both $port" >&2; exit 2; }
  for p in "$port" "$ws_port"; do
    if port_open 127.0.0.1 "$p"; then
      echo "$prog: port $p is in use (ss -ltnp 'sport = :$p' shows by what). Choose free ports," >&2
      echo "  e.g. --port 1884 --ws-port 8084, or stop the system broker: sudo systemctl stop mosquitto" >&2
      exit 2
    fi
  done
}

# Writes $data/mosquitto.conf from mosquitto/TEMPLATE (the ports, bind
# address, web directory and any further `sed` expressions filled in), with
# a data directory of its own and logs on the terminal, says SUMMARY with the
# Mosquitto version, and runs it in the foreground (exec).
broker_run() { # TEMPLATE SUMMARY [SED-EXPRESSION...]
  local template="$1" summary="$2" sed_args=() e
  shift 2
  for e in "$@"; do sed_args+=(-e "$e"); done
  data="${data:-${XDG_STATE_HOME:-$HOME/.local/state}/pi-mqtt/$prog-$port}"
  mkdir -p "$data"
  data="$(cd "$data" && pwd)"
  local conf="$data/mosquitto.conf"
  sed -e "s/@MQTT_PORT@/$port/; s/@MQTTS_PORT@/$port/; s/@WS_PORT@/$ws_port/; s/@WSS_PORT@/$ws_port/" \
      -e "s#@WEB_DIR@#$PIMQTT_ROOT/web#" -e "s/ @BIND@/${bind:+ $bind}/" "${sed_args[@]}" \
      "$PIMQTT_ROOT/mosquitto/$template" > "$conf"
  cat >> "$conf" <<CONF

# Added by scripts/$prog: a data directory of its own, logs on the terminal.
persistence_location $data/
# Started as root, Mosquitto would switch to the mosquitto user, which can
# neither write this directory nor read 0600 keys: stay who we are (ignored
# when not root).
user $(id -un)
log_dest stdout
CONF
  echo "$prog: Mosquitto $(mosquitto_version) ($(mosquitto_bin)); $summary; data in $data" >&2
  exec "$(mosquitto_bin)" -c "$conf"
}
