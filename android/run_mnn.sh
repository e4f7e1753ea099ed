#!/system/bin/sh
# Run one case (one user's batch of requests) with MNN's llm_demo and print machine-readable
# results on stdout.  POSIX sh: runs under Android's mksh/toybox, busybox ash and Linux sh alike.
#
#   run_mnn.sh --bin DIR --model DIR --case DIR [--threads N] [--affinity HEXMASK]
#
# --model is the artifact folder of `make export FORMAT=mnn` (config.json, llm_config.json,
# llm.mnn, llm.mnn.weight, tokenizer).  The case folder (made by device_runner/phone.py) holds
# requests.tsv, one line per request:
#   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|- [<TAB> ...]
# and ID.prompt files.  Each request is one `llm_demo CONFIG PROMPT_FILE MAX_TOKENS` run:
# CONFIG is the artifact's config.json with base_dir (the artifact folder), thread_num, the
# sampler (greedy at temperature 0) and use_template=false (the prompt is already rendered) put
# first; PROMPT_FILE holds the prompt on one line, since llm_demo reads one prompt per line
# (phone.py refuses prompts with a newline).  llm_demo has no grammar sampler and no prompt
# cache: a request with a grammar is an error (EW_ERROR), a shared prefix is evaluated again.
#
# Output, one record per line (device_runner/engines.py parses it), as run_llamacpp.sh:
#   EW_NOTE text / EW_ERROR text
#   EW_BEGIN request id
#   EW_LOG line                   llm_demo's stderr lines
#   EW_RC n / EW_RSS_KB n / EW_WALL_MS n
#   EW_TEXT base64                llm_demo's stdout (the text, then its prefill/decode counters)
#   EW_END request id
#   EW_DONE
set -u
. "$(dirname "$0")/common.sh"
THREADS=4
read_args "$@"
require_exe llm_demo "android/build.sh --only mnn builds it"
[ -r "$MODEL/config.json" ] || { echo "EW_ERROR no config.json in model folder $MODEL (make export FORMAT=mnn)"; exit 3; }
require_requests
command -v awk >/dev/null 2>&1 || { echo "EW_ERROR no awk on this device (needed to write llm_demo's config)"; exit 3; }
HERE=$(pwd)
case "$CASE" in /*) ;; *) CASE=$HERE/$CASE ;; esac
OUT=$CASE/out
mkdir -p "$OUT/tmp"
use_engine_libs
case "$MODEL" in /*) ABS_MODEL=$MODEL ;; *) ABS_MODEL=$HERE/$MODEL ;; esac

setup_measuring

TAB=$(printf '\t')
while IFS="$TAB" read -r id ntok temp seed grammar prefix rest; do
    [ -n "$id" ] || continue
    refuse_grammar "$id" "$grammar" llm_demo
    case "$temp" in
        0|0.0|0.00) sampler='"sampler_type": "greedy"' ;;
        *) sampler="\"sampler_type\": \"mixed\", \"temperature\": $temp" ;;
    esac
    # The keys go first: MNN's config reader takes the first of duplicate keys.
    keys="\"base_dir\": \"$ABS_MODEL/\", \"thread_num\": $THREADS, $sampler, \"use_template\": false, \"tmp_path\": \"tmp\","
    awk -v keys="$keys" 'done == 0 && sub(/\{/, "{" keys) { done = 1 } { print }' "$MODEL/config.json" >"$OUT/$id.config.json"
    # One line: llm_demo reads one prompt per line.
    { tr -d '\n' <"$CASE/$id.prompt"; echo; } >"$OUT/$id.line"
    echo "EW_BEGIN request $id"
    started=$(now_ms)
    cd "$OUT" || exit 3
    measured "$OUT/$id.txt" "$OUT/$id.log" "$EXE" "$OUT/$id.config.json" "$OUT/$id.line" "$ntok"
    cd "$HERE" || exit 3
    ended=$(now_ms)
    sed 's/^/EW_LOG /' "$OUT/$id.log"
    end_record request "$id"
done <"$CASE/requests.tsv"
echo "EW_DONE"
