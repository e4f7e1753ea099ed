#!/system/bin/sh
# Run one case (one user's batch of requests) with our llama.cpp runner, ew_llama
# (android/runners/llamacpp): one process for the whole case, the model loaded once, the KV cache
# kept across requests.  POSIX sh: runs under Android's mksh/toybox, busybox ash and Linux sh alike.
#
#   run_ew_llama.sh --bin DIR --model FILE --case DIR [--threads N] [--ctx N] [--affinity HEXMASK]
#
# The case folder (made by device_runner/phone_runtime.py) holds requests.tsv, one line per request:
#   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|-
# and ID.prompt files.  ew_llama itself prints the records (EW_BEGIN / EW_STAT / EW_RC / EW_RSS_KB /
# EW_WALL_MS / EW_TEXT / EW_END per request, see ew_llama.cpp); this script passes them on, and
# when ew_llama fails says so in one EW_ERROR line naming the request it was running, then EW_DONE
# only if it succeeded.
set -u
. "$(dirname "$0")/common.sh"
CTX=4096
read_args "$@"
require_exe ew_llama "android/build.sh builds it"
[ -r "$MODEL" ] || { echo "EW_ERROR model $MODEL is not readable"; exit 3; }
require_requests
OUT=$CASE/out
mkdir -p "$OUT"
setup_affinity  # PIN (--affinity); ew_llama measures its own peak RSS (getrusage) and times

set -- --model "$MODEL" --case "$CASE" --ctx "$CTX"
[ -n "$THREADS" ] && set -- "$@" --threads "$THREADS"
# shellcheck disable=SC2086
$PIN "$EXE" "$@" </dev/null >"$OUT/records.txt" 2>"$OUT/log.txt"
rc=$?
# What it printed (records of the finished requests; EW_NEXT lines name the one it started last).
grep -v '^EW_NEXT ' "$OUT/records.txt"
if [ "$rc" -ne 0 ] && ! grep -q '^EW_ERROR ' "$OUT/records.txt"; then  # (else it said why itself)
    running=$(sed -n 's/^EW_NEXT request //p' "$OUT/records.txt" | tail -1)
    finished=$(sed -n 's/^EW_END request //p' "$OUT/records.txt" | tail -1)
    if [ -n "$running" ] && [ "$running" != "$finished" ]; then where="while running request $running"
    elif [ -n "$running" ]; then where="after request $running"
    else where="before its first request"; fi
    if grep -q 'error while loading shared libraries\|library.*not found\|cannot open shared object' "$OUT/log.txt"; then
        why="could not start: a shared library is missing"
    elif [ "$rc" -gt 128 ]; then
        why="was killed by signal $((rc - 128))"
    else
        why="exited with status $rc"
    fi
    last=$(grep -v '^$' "$OUT/log.txt" | tail -3 | tr '\n' ' ')
    echo "EW_ERROR ew_llama $why $where${last:+; its last log lines: $last}"
fi
[ "$rc" -eq 0 ] || exit 5
echo "EW_DONE"
