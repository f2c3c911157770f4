# shellcheck shell=bash
# A walkthrough harness: "terminals" (programs run in the background with
# their output in files) that a step starts, waits on, shows and checks, and
# the steps run in order with PASS/FAIL counts and a closing line
# "N passed, M failed". scripts/exercises runs the book's steps with it.
#
# The caller sets `tmp` (a directory of its own, which it removes), STEPS
# (step names, each a function step_NAME), TITLE (an associative array:
# name -> title) and `ci` (1: no pauses), defines its steps, then calls
# walk_steps [ONLY]. Call walk_stop_all in its EXIT trap.
# Works with or without set -e.
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---------------------------------------------------------------- output
if [[ -t 1 ]]; then
  B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' Y=$'\e[33m' C=$'\e[36m' N=$'\e[0m'
else
  B="" G="" R="" Y="" C="" N=""
fi
say() { printf '%s\n' "$*"; }
note() { printf '%s\n' "${Y}Note:${N} $*" | fold -s -w 100; }
header() { printf '\n%s\n' "${B}== $*${N}"; }

# Shows a command the way a book writes it: topics and messages quoted.
show_cmd() {
  local out="" prev="" a q
  for a in "$@"; do
    q="$a"
    if [[ "$prev" =~ ^(-t|-m|--will-topic|--will-payload)$ || ! "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      q="'${a//\'/\'\\\'\'}'"
    fi
    out+="${out:+ }$q"
    prev="$a"
  done
  printf '%s' "$out"
}

# ---------------------------------------------------------------- terminals
# Each "terminal" is a program run in the background with its stdout and
# stderr in $tmp/NAME.out and .err, so a step can show and check what it
# printed. Lines holding $WALK_HIDE (a walkthrough's own sync messages) are
# left out of what is shown and checked.
declare -A PID=() RC=() TERMNO=()
WALK_HIDE=walkthrough-sync

start() { # NAME TERMINAL-NUMBER COMMAND...
  local name="$1" n="$2"; shift 2
  say "${C}Terminal #$n \$${N} $(show_cmd "$@")"
  # Appending, so that a step can empty the file while the program runs.
  : >"$tmp/$name.out"; : >"$tmp/$name.err"
  # mosquitto_sub's -d lines are not flushed when stdout is a file: make
  # them line-buffered, as on a terminal, so they can be waited for.
  local buf=()
  [[ "$1" == mosquitto_sub ]] && command -v stdbuf >/dev/null && buf=(stdbuf -oL)
  "${buf[@]}" "$@" >>"$tmp/$name.out" 2>>"$tmp/$name.err" </dev/null &
  PID[$name]=$!
  TERMNO[$name]=$n
  unset "RC[$name]"
}

run() { # NAME TERMINAL-NUMBER COMMAND...: runs to completion (30 s at most)
  local name="$1" n="$2"; shift 2
  say "${C}Terminal #$n \$${N} $(show_cmd "$@")"
  timeout 30 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" </dev/null
  RC[$name]=$?
  TERMNO[$name]=$n
}

# What a terminal printed, without the hidden lines.
lines() { grep -v -- "$WALK_HIDE" "$tmp/$1.out" 2>/dev/null; }
errlines() { grep -v -- "$WALK_HIDE" "$tmp/$1.err" 2>/dev/null; }

show() { # NAME: what the terminal printed (stdout, then stderr)
  local name="$1" any=0 l
  say "  Terminal #${TERMNO[$name]} printed:"
  while IFS= read -r l; do say "    | $l"; any=1; done < <(lines "$name")
  while IFS= read -r l; do say "    ! $l"; any=1; done < <(errlines "$name")
  ((any)) || say "    (nothing)"
}

# Waits until a terminal printed LINE (exactly; COUNT times), or SECONDS (15)
# pass.
wait_line() { wait_for "${3:-15}" has_line "$1" "$2"; } # NAME LINE [SECONDS]
wait_count() { wait_for 15 count_at_least "$1" "$2" "$3"; } # NAME LINE COUNT

# Ctrl+C in a terminal: SIGINT (or SIGNAL), then wait for the program to end
# (15 s, then SIGKILL); its exit code goes to RC[NAME].
ctrl_c() { # NAME [SIGNAL]
  local name="$1" sig="${2:-INT}" pid="${PID[$1]}"
  # Spare the reader bash's "Killed" job report.
  [[ "$sig" == KILL ]] && disown "$pid" 2>/dev/null
  kill -"$sig" "$pid" 2>/dev/null
  wait_for 15 eval "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  RC[$name]=$?
  unset "PID[$name]"
}

wait_exit() { # NAME [SECONDS]: waits for a program that ends by itself
  local name="$1" pid="${PID[$1]}"
  wait_for "${2:-15}" eval "! kill -0 $pid 2>/dev/null" || return 1
  wait "$pid" 2>/dev/null
  RC[$name]=$?
  unset "PID[$name]"
}

walk_stop_all() {
  local name
  for name in "${!PID[@]}"; do ctrl_c "$name" KILL; done
}

# ---------------------------------------------------------------- checks
step_pass=0 step_fail=0
check() { # DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then
    say "  ${G}PASS${N} $what"; step_pass=$((step_pass + 1))
  else
    say "  ${R}FAIL${N} $what"; step_fail=$((step_fail + 1))
  fi
}
has_line() { lines "$1" | grep -qxF -- "$2"; }
no_line() { ! lines "$1" | grep -qxF -- "$2"; }
count_is() { [[ "$(lines "$1" | grep -cxF -- "$2")" == "$3" ]]; }
count_at_least() { (($(lines "$1" | grep -cxF -- "$2") >= $3)); }
nothing() { [[ -z "$(lines "$1")" ]]; }
exactly() { # NAME LINE...: the terminal printed these lines, in this order, and nothing else
  local name="$1"; shift
  [[ "$(lines "$name")" == "$(printf '%s\n' "$@")" ]]
}
refused() { [[ "${RC[$1]:-0}" != 0 ]] && grep -q -- "$2" "$tmp/$1.err"; } # NAME ERROR-TEXT
last_line_is() { [[ "$(lines "$1" | tail -n 1)" == "$2" ]]; }
rc_is() { [[ "${RC[$1]:-none}" == "$2" ]]; }

# ---------------------------------------------------------------- the steps
# Runs every step of STEPS (or only ONLY), each followed by walk_stop_all;
# a step passes with at least one check and no failed one. Between steps it
# waits for Enter unless $ci. Prints a summary and "N passed, M failed";
# returns non-zero if a step failed.
walk_steps() { # [ONLY]
  local only="${1:-}" s c answer
  declare -A result=() checks=()
  local total_pass=0 total_fail=0
  for s in "${STEPS[@]}"; do
    [[ -n "$only" && "$s" != "$only" ]] && continue
    header "$s: ${TITLE[$s]}"
    step_pass=0 step_fail=0
    "step_$s"
    walk_stop_all
    checks[$s]="$step_pass/$((step_pass + step_fail)) checks"
    if ((step_fail == 0 && step_pass > 0)); then
      result[$s]=PASS; total_pass=$((total_pass + 1))
    else
      result[$s]=FAIL; total_fail=$((total_fail + 1))
    fi
    if ((!ci)) && [[ -z "$only" && "$s" != "${STEPS[-1]}" ]]; then
      read -r -p "Press Enter for the next step (q to stop) " answer </dev/tty || answer=q
      [[ "$answer" == q* ]] && break
    fi
  done
  header "Summary"
  for s in "${STEPS[@]}"; do
    [[ -n "${result[$s]:-}" ]] || continue
    if [[ "${result[$s]}" == PASS ]]; then c="$G"; else c="$R"; fi
    printf '  %s%-4s%s %-10s %s (%s)\n' "$c" "${result[$s]}" "$N" "$s" "${TITLE[$s]}" "${checks[$s]}"
  done
  say "$total_pass passed, $total_fail failed"
  ((total_fail == 0))
}
