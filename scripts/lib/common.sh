# shellcheck shell=bash
# Shell helpers that every script in scripts/ sources (issue 9, "Shell"):
#   . "$(dirname "$0")/lib/common.sh"          (scripts/*)
#   . "$(dirname "$0")/../lib/common.sh"       (scripts/test.d/*, scripts/bench.d/*)
# It sets PIMQTT_ROOT (the repository) and defines functions only: it changes
# no shell option and runs nothing.

PIMQTT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Mosquitto 2.0.21 (Debian trixie's, and so the current Raspberry Pi OS's),
# which `scripts/setup --test` unpacks here beside the system's Mosquitto;
# scripts/test runs the broker-facing tests against it too.
PIMQTT_MOSQUITTO_NEW_VERSION=2.0.21
PIMQTT_MOSQUITTO_NEW_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pi-mqtt/mosquitto-$PIMQTT_MOSQUITTO_NEW_VERSION"
# Mosquitto 2.1.2 (Debian forky's, the base of the next Raspberry Pi OS),
# unpacked there too with the forky libraries it runs on (glibc included):
# its bin/mosquitto runs it with forky's own dynamic loader; scripts/test
# runs the broker-facing tests against it as well.
PIMQTT_MOSQUITTO_NEXT_VERSION=2.1.2
PIMQTT_MOSQUITTO_NEXT_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pi-mqtt/mosquitto-$PIMQTT_MOSQUITTO_NEXT_VERSION"

# The Mosquitto to run: $PIMQTT_MOSQUITTO (a command or a path, as for the
# Rust test toolkit's Broker), else the system's `mosquitto`.
mosquitto_bin() { printf '%s\n' "${PIMQTT_MOSQUITTO:-mosquitto}"; }

# The version ("2.0.11") of that Mosquitto, or of BINARY; empty if it does
# not run. (`mosquitto -h` exits non-zero: safe under set -e -o pipefail.)
mosquitto_version() { # [BINARY]
  { "${1:-$(mosquitto_bin)}" -h 2>&1 || true; } | sed -n 's/^mosquitto version \([0-9][0-9.]*\).*/\1/p;T;q'
}

# True if something accepts TCP connections on HOST PORT.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# A free TCP port on 127.0.0.1, a random unused one below the ephemeral range
# (checked by binding it with python3, by connecting without it).
free_port() {
  # Below the kernel's ephemeral ports (as the Rust testkit's free_port):
  # a client reconnecting to a broker that is down for a restart must not
  # be given the broker's port as its own and connect to itself.
  if command -v python3 >/dev/null; then
    python3 -c '
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
floor = min(10000, low - 1024)
while True:
    p = random.randrange(floor, low)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    print(p)
    break'
    return
  fi
  local p
  while :; do
    p=$((10000 + RANDOM % 22000))
    port_open 127.0.0.1 "$p" || { echo "$p"; return; }
  done
}

# Runs COMMAND... every 50 ms until it succeeds (returns 0) or SECONDS pass
# (returns 1): a condition with a deadline, never a fixed sleep.
wait_for() { # SECONDS COMMAND...
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# Stops a process (or a process group: -PGID): SIGTERM (or SIGNAL), up to
# SECONDS (5) for it to end, then SIGKILL; reaps it if it is this shell's
# child. Returns at once for an empty or gone pid.
stop_pid() { # PID [SECONDS [SIGNAL]]
  local pid="$1" secs="${2:-5}" sig="${3:-TERM}"
  [[ -n "$pid" && "$pid" != - ]] || return 0
  if kill -"$sig" -- "$pid" 2>/dev/null; then
    wait_for "$secs" eval "! kill -0 -- $pid 2>/dev/null" || kill -9 -- "$pid" 2>/dev/null || true
  fi
  [[ "$pid" == -* ]] || wait "$pid" 2>/dev/null || true
}

# The memory available now, in MiB.
mem_available_mib() { awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo; }

# How many jobs `cargo build --release` may run side by side here: the
# release profile links with fat LTO; a job takes up to PIMQTT_MIB_PER_JOB
# MiB (docs/raspberry-pi.md, "Build from source": measured 652 MiB for 2 jobs, 353 MiB for
# the largest single rustc; 400 leaves a margin); at least 1, at most the
# CPUs. $CARGO_BUILD_JOBS wins.
cargo_jobs() {
  if [[ -n "${CARGO_BUILD_JOBS:-}" ]]; then echo "$CARGO_BUILD_JOBS"; return; fi
  local per="${PIMQTT_MIB_PER_JOB:-400}" cpus jobs
  cpus="$(nproc 2>/dev/null || echo 1)"
  jobs=$(($(mem_available_mib) / per))
  ((jobs < 1)) && jobs=1
  ((jobs > cpus)) && jobs=$cpus
  echo "$jobs"
}

# A script's help: its first comment block (after the #! line), unmarked.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# For an option loop: sets VAR to OPTION's value, or exits 2 with
# "PROG: OPTION needs a value" (PROG is $prog, else the script's name).
#   --port) opt_value port "$@"; shift 2 ;;
opt_value() { # VAR OPTION [VALUE...]
  if (($# < 3)) || [[ -z "$3" || "$3" == -* ]]; then
    echo "${prog:-$(basename "$0")}: $2 needs a value (try --help)" >&2
    exit 2
  fi
  printf -v "$1" '%s' "$3"
}

# Prints the TCP listening sockets of process PID, and of the given PORTs,
# that are not on a loopback address (127.0.0.0/8, ::1), as `ss -ltn` shows
# them; prints "none listening" if it finds no socket at all. Nothing printed:
# all on loopback.
nonloopback_listeners() { # PID PORT...
  local pid="$1" filter="" p
  shift
  for p in "$@"; do filter+="${filter:+ or }sport = :$p"; done
  local socks
  socks="$({ ss -ltnpH 2>/dev/null | grep -F "pid=$pid," || true
             [[ -z "$filter" ]] || ss -ltnH "( $filter )"; } | awk '{ print $4 }' | sort -u)"
  [[ -n "$socks" ]] || { echo "none listening"; return; }
  for p in "$@"; do grep -q ":$p\$" <<<"$socks" || echo "nothing on port $p"; done
  grep -vE '^(127\.[0-9]+\.[0-9]+\.[0-9]+|\[::1\]):[0-9]+$' <<<"$socks" || true
}
