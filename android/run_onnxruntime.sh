#!/system/bin/sh
# Run one case (one user's batch of requests) with onnxruntime-genai's model_benchmark and print
# machine-readable results on stdout.  POSIX sh: runs under Android's mksh/toybox, busybox ash
# and Linux sh alike.
#
#   run_onnxruntime.sh --bin DIR --model DIR --case DIR [--threads N] [--affinity HEXMASK]
#
# --model is the artifact folder of `make export FORMAT=onnx` (genai_config.json, model.onnx,
# tokenizer).  The case folder (made by device_runner/phone.py) holds requests.tsv, one line
# per request:
#   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|- [<TAB> ...]
# and ID.prompt files.  Each request is one `model_benchmark -i MODEL --prompt_file ID.prompt
# -g MAX_TOKENS -r 1 -w 0` run.  model_benchmark measures; it prints no generated text, takes
# no temperature, seed or thread count (the model's genai_config.json decides), and has no
# grammar: a request with a grammar is an error (EW_ERROR).  libonnxruntime*.so are looked up
# next to the binary and in ../lib (android/build.sh puts them there).
#
# Output, one record per line (device_runner/engines.py parses it), as run_llamacpp.sh:
#   EW_NOTE text / EW_ERROR text
#   EW_BEGIN request id
#   EW_LOG line                   model_benchmark's stderr lines
#   EW_RC n / EW_RSS_KB n / EW_WALL_MS n
#   EW_TEXT base64                model_benchmark's stdout (its report)
#   EW_END request id
#   EW_DONE
set -u
. "$(dirname "$0")/common.sh"
read_args "$@"
require_exe model_benchmark "android/build.sh --only ortgenai builds it"
[ -r "$MODEL/genai_config.json" ] || { echo "EW_ERROR no genai_config.json in model folder $MODEL (make export FORMAT=onnx)"; exit 3; }
require_requests
OUT=$CASE/out
mkdir -p "$OUT"
use_engine_libs
echo "EW_NOTE model_benchmark prints no generated text: completions are empty, timings only"
[ -n "$THREADS" ] && echo "EW_NOTE threads $THREADS not applied: model_benchmark takes them from genai_config.json"

setup_measuring

TAB=$(printf '\t')
while IFS="$TAB" read -r id ntok temp seed grammar prefix rest; do
    [ -n "$id" ] || continue
    refuse_grammar "$id" "$grammar" model_benchmark
    echo "EW_BEGIN request $id"
    started=$(now_ms)
    measured "$OUT/$id.txt" "$OUT/$id.log" "$EXE" -i "$MODEL" --prompt_file "$CASE/$id.prompt" -g "$ntok" -r 1 -w 0
    ended=$(now_ms)
    sed 's/^/EW_LOG /' "$OUT/$id.log"
    end_record request "$id"
done <"$CASE/requests.tsv"
echo "EW_DONE"
