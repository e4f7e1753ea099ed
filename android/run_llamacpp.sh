#!/system/bin/sh
# Run one case (one user's batch of requests) with llama.cpp's llama-completion and print
# machine-readable results on stdout.  POSIX sh: runs under Android's mksh/toybox, busybox
# ash and Linux sh alike.
#
#   run_llamacpp.sh --bin DIR --model FILE --case DIR [--threads N] [--ctx N] [--affinity HEXMASK]
#
# The case folder (made by device_runner/phone.py) holds requests.tsv, one line per request:
#   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|-
# and ID.prompt files.  A shared prefix is evaluated once into PREFIX_FILE.cache
# (--prompt-cache) and reused read-only by every request that names it.
#
# Output, one record per line (device_runner/engines.py parses it):
#   EW_NOTE text                  something that could not be controlled or measured
#   EW_BEGIN kind id              kind = prefix | request
#   EW_LOG line                   llama.cpp's own perf and session lines (stderr)
#   EW_RC n / EW_RSS_KB n / EW_WALL_MS n
#   EW_TEXT base64                the generated text (several lines, concatenated)
#   EW_END kind id
set -u
. "$(dirname "$0")/common.sh"
CTX=4096
read_args "$@"
require_exe llama-completion "android/build.sh builds it"
[ -r "$MODEL" ] || { echo "EW_ERROR model $MODEL is not readable"; exit 3; }
require_requests
OUT=$CASE/out
mkdir -p "$OUT"

setup_measuring

THREAD_ARGS=
[ -n "$THREADS" ] && THREAD_ARGS="-t $THREADS"

# run_one KIND ID PROMPT_FILE MAX_TOKENS TEMP SEED GRAMMAR CACHE_ARGS...
run_one() {
    kind=$1; id=$2; prompt=$3; ntok=$4; temp=$5; seed=$6; grammar=$7; shift 7
    echo "EW_BEGIN $kind $id"
    set -- "$@" -m "$MODEL" -f "$prompt" -n "$ntok" --temp "$temp" -s "$seed" -c "$CTX" -no-cnv --no-display-prompt
    [ "$grammar" != "-" ] && set -- "$@" --grammar-file "$CASE/$grammar"
    started=$(now_ms)
    # shellcheck disable=SC2086
    measured "$OUT/$id.txt" "$OUT/$id.log" "$EXE" $THREAD_ARGS "$@"
    ended=$(now_ms)
    grep -E 'perf_print|session|error|failed|out of memory' "$OUT/$id.log" | sed 's/^/EW_LOG /'
    end_record "$kind" "$id"
}

TAB=$(printf '\t')
# Shared prefixes first, once each (evaluated into their .cache files).
cut -f6 "$CASE/requests.tsv" | sort -u | while read -r prefix; do
    [ "$prefix" = "-" ] || [ -z "$prefix" ] && continue
    [ -s "$CASE/$prefix.cache" ] && continue
    run_one prefix "$prefix" "$CASE/$prefix" 1 0 0 - --prompt-cache "$CASE/$prefix.cache"
done
while IFS="$TAB" read -r id ntok temp seed grammar prefix; do
    [ -n "$id" ] || continue
    if [ "$prefix" = "-" ]; then
        run_one request "$id" "$CASE/$id.prompt" "$ntok" "$temp" "$seed" "$grammar"
    else
        run_one request "$id" "$CASE/$id.prompt" "$ntok" "$temp" "$seed" "$grammar" \
            --prompt-cache "$CASE/$prefix.cache" --prompt-cache-ro
    fi
done <"$CASE/requests.tsv"
echo "EW_DONE"
