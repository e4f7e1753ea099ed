# Shared by android/run_<engine>.sh, sourced first (it only defines things).
# POSIX sh: runs under Android's mksh/toybox, busybox ash and Linux sh alike.
# read_args, require_requests, use_engine_libs, refuse_grammar: the scripts' common front;
# now_ms, wall_ms, setup_measuring (TIMEV, RSS_DIV, PIN), setup_affinity (PIN), measured and
# end_record: timing, peak RSS and each record's tail; ew_run and ew_finish: our own runners'
# (run_ew_*.sh) one process per case and its records.

# read_args "$@": sets BIN, MODEL, CASE, AFFINITY, and THREADS / CTX (whose defaults a script may
# set before calling it); an unknown argument ends the script.
read_args() {
    BIN=; MODEL=; CASE=; AFFINITY=; THREADS=${THREADS-}; CTX=${CTX-}
    while [ $# -gt 0 ]; do
        case "$1" in
            --bin) BIN=$2; shift 2 ;;
            --model) MODEL=$2; shift 2 ;;
            --case) CASE=$2; shift 2 ;;
            --threads) THREADS=$2; shift 2 ;;
            --ctx) CTX=$2; shift 2 ;;  # run_llamacpp.sh's context; the other runners bound each request
            --affinity) AFFINITY=$2; shift 2 ;;
            *) echo "EW_ERROR unknown argument $1"; exit 2 ;;
        esac
    done
}

# EXE: the runner binary NAME in --bin, or one EW_ERROR line saying what builds it (exit 3).
require_exe() {
    EXE=$BIN/$1
    [ -x "$EXE" ] || { echo "EW_ERROR no $1 in $BIN ($2)"; exit 3; }
}

require_requests() {
    [ -r "$CASE/requests.tsv" ] || { echo "EW_ERROR no $CASE/requests.tsv"; exit 3; }
}

# The engine's shared libraries: beside the runner binary, or in ../lib (android/build.sh's layout).
use_engine_libs() {
    LD_LIBRARY_PATH="$BIN:$BIN/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
}

# refuse_grammar ID GRAMMAR RUNNER: runners other than llama.cpp's have no constrained decoding.
refuse_grammar() {
    if [ "$2" != "-" ]; then
        echo "EW_ERROR request $1 needs constrained decoding ($2), which $3 cannot apply; use run_llamacpp.sh"
        exit 4
    fi
}

# Milliseconds since the epoch as a string (where date has %N: toybox, GNU; busybox's has whole
# seconds, and then the host uses the engine's own times), and their difference by awk: mksh's
# arithmetic is 32-bit, too small for them.
now_ms() {
    t=$(date +%s%N 2>/dev/null)
    case "$t" in
        *N|'') echo - ;;
        *) echo "${t%??????}" ;;
    esac
}
wall_ms() {
    [ "$1" != - ] && [ "$2" != - ] && command -v awk >/dev/null 2>&1 \
        && awk -v a="$1" -v b="$2" 'BEGIN { printf "EW_WALL_MS %d\n", b - a }'
}

# end_record KIND ID, after measured (and $started, $ended): the record's exit code, peak RSS,
# wall time and the runner's stdout ($OUT/ID.txt), then EW_END.
end_record() {
    echo "EW_RC $rc"
    [ -n "$hwm" ] && echo "EW_RSS_KB $hwm"
    wall_ms "$started" "$ended"
    base64 <"$OUT/$2.txt" | sed 's/^/EW_TEXT /'
    echo "EW_END $1 $2"
}

# setup_measuring (after read_args): peak RSS is VmHWM of the runner's process when /proc is
# there, else time -v (rusage maxrss); PIN applies --affinity.
setup_measuring() {
    TIMEV=
    if [ ! -r /proc/self/status ]; then
        for t in /system/bin/time /usr/bin/time /bin/time; do
            if [ -x "$t" ] && "$t" -v true >/dev/null 2>&1; then TIMEV=$t; break; fi
        done
        [ -n "$TIMEV" ] || echo "EW_NOTE peak RSS not measured: no /proc/PID/status and no time -v"
    fi
    # BusyBox time (seen on 1.35) treats ru_maxrss, already in KiB, as pages: it prints 4x on 4 KiB pages.
    RSS_DIV=1
    if [ -n "$TIMEV" ] && "$TIMEV" --help 2>&1 | head -1 | grep -q BusyBox; then RSS_DIV=4; fi
    setup_affinity
}

# setup_affinity: PIN is the command prefix that applies --affinity (taskset), or empty.
setup_affinity() {
    PIN=
    if [ -n "$AFFINITY" ]; then
        if command -v taskset >/dev/null 2>&1; then PIN="taskset $AFFINITY"; else echo "EW_NOTE affinity $AFFINITY not applied: no taskset"; fi
    fi
}

# measured STDOUT_FILE STDERR_FILE COMMAND...: sets rc and hwm (KiB, or empty).
measured() {
    mout=$1; merr=$2; shift 2
    hwm=
    if [ -n "$TIMEV" ]; then
        # shellcheck disable=SC2086
        $PIN "$TIMEV" -v "$@" </dev/null >"$mout" 2>"$merr"
        rc=$?
        hwm=$(sed -n 's/.*Maximum resident set size (kbytes): *\([0-9]*\).*/\1/p; s/.*Max RSS: *\([0-9]*\).*/\1/p' "$merr" | tail -1)
        [ -n "$hwm" ] && hwm=$((hwm / RSS_DIV))
    else
        # shellcheck disable=SC2086
        $PIN "$@" </dev/null >"$mout" 2>"$merr" &
        pid=$!
        while kill -0 "$pid" 2>/dev/null; do
            h=$(sed -n 's/^VmHWM:[^0-9]*\([0-9]*\).*/\1/p' "/proc/$pid/status" 2>/dev/null)
            [ -n "$h" ] && hwm=$h
            sleep 0.05
        done
        wait "$pid"
        rc=$?
    fi
}

# ew_run NAME ARG..., after read_args, require_exe and OUT: one of our runners (ew_llama, ew_ort,
# ew_et, ew_mnn; they measure their own peak RSS and times) on the whole case: setup_affinity, then
#   $PIN "$EXE" ARG... [--threads THREADS] </dev/null >"$OUT/records.txt" 2>"$OUT/log.txt"; rc=$?
# and ew_finish NAME.
ew_run() {
    ew_name=$1; shift
    setup_affinity
    [ -n "$THREADS" ] && set -- "$@" --threads "$THREADS"
    # shellcheck disable=SC2086
    $PIN "$EXE" "$@" </dev/null >"$OUT/records.txt" 2>"$OUT/log.txt"
    rc=$?
    ew_finish "$ew_name"
}

# ew_finish NAME, after one of our runners ran the case (ew_run): passes its records on (not its
# EW_NEXT lines, which name the request it started last); when it failed without saying why itself
# (an EW_ERROR line of its own), one EW_ERROR sentence naming the request it was running and its last
# log lines; then EW_DONE, or exit 5.
ew_finish() {
    grep -v '^EW_NEXT ' "$OUT/records.txt"
    if [ "$rc" -ne 0 ] && ! grep -q '^EW_ERROR ' "$OUT/records.txt"; then
        running=$(sed -n 's/^EW_NEXT request //p' "$OUT/records.txt" | tail -1)
        finished=$(sed -n 's/^EW_END request //p' "$OUT/records.txt" | tail -1)
        if [ -n "$running" ] && [ "$running" != "$finished" ]; then where="while running request $running"
        elif [ -n "$running" ]; then where="after request $running"
        else where="before its first request"; fi
        if grep -q 'error while loading shared libraries\|library.*not found\|cannot open shared object\|Failed to load onnxruntime' "$OUT/log.txt"; then
            why="could not start: a shared library is missing"
        elif [ "$rc" -gt 128 ]; then
            why="was killed by signal $((rc - 128))"
        else
            why="exited with status $rc"
        fi
        last=$(grep -v '^$' "$OUT/log.txt" | tail -3 | tr '\n' ' ')
        echo "EW_ERROR $1 $why $where${last:+; its last log lines: $last}"
    fi
    [ "$rc" -eq 0 ] || exit 5
    echo "EW_DONE"
}
