# Shared by android/run_<engine>.sh, sourced after their arguments are read (uses $AFFINITY).
# POSIX sh: runs under Android's mksh/toybox, busybox ash and Linux sh alike.
# Defines now_ms, wall_ms and measured; sets TIMEV, RSS_DIV and PIN.

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

# Peak RSS: VmHWM of the runner's process when /proc is there, else time -v (rusage maxrss).
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
PIN=
if [ -n "$AFFINITY" ]; then
    if command -v taskset >/dev/null 2>&1; then PIN="taskset $AFFINITY"; else echo "EW_NOTE affinity $AFFINITY not applied: no taskset"; fi
fi

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
