# shellcheck shell=bash
# The frame of a shell suite in scripts/test.d, sourced after
# `set -euo pipefail`: the common helpers, the repository as the working
# directory, a directory $tmp of its own, `broker_pid` (stopped at exit, when
# set), and ok/fail lines that name the suite (fail also shows the end of
# $tmp/broker.log, if any, and exits 1).
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$PIMQTT_ROOT"
suite="$(basename "$0")"
tmp="$(mktemp -d)"
broker_pid=""
trap 'stop_pid "$broker_pid"; rm -rf "$tmp"' EXIT
fail() { echo "$suite: FAIL: $*" >&2; [[ -f "$tmp/broker.log" ]] && tail -20 "$tmp/broker.log" >&2; exit 1; }
ok() { echo "$suite: ok: $*"; }
