#!/system/bin/sh
# Run one case (one user's batch of requests) with our onnxruntime-genai runner, ew_ort
# (android/runners/onnxruntime): one process for the whole case, the model loaded once, one generator
# (its KV cache) kept across requests, choices and JSON schemas applied on the phone.  POSIX sh: runs
# under Android's mksh/toybox, busybox ash and Linux sh alike.
#
#   run_ew_ort.sh --bin DIR --model DIR --case DIR [--threads N] [--affinity HEXMASK]
#
# --model is the artifact folder of `make export FORMAT=onnx` (genai_config.json, model.onnx,
# tokenizer.json).  The case folder (made by device_runner/phone_runtime.py) holds requests.tsv:
#   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|-
# ID.prompt files and the constraints (*.choices, *.schema.json).  ew_ort prints the records itself
# (EW_BEGIN / EW_STAT / EW_RC / EW_RSS_KB / EW_WALL_MS / EW_TEXT / EW_END per request, see ew_ort.cpp);
# this script passes them on, and when ew_ort fails says so in one EW_ERROR line naming the request
# it was running, then EW_DONE only if it succeeded.  libonnxruntime-genai.so and libonnxruntime.so(.1)
# are looked up beside the binary and in ../lib (android/build.sh puts them there; the harness pushes
# them beside it).
set -u
. "$(dirname "$0")/common.sh"
read_args "$@"
require_exe ew_ort "android/build.sh --only ortgenai builds it"
[ -r "$MODEL/genai_config.json" ] || { echo "EW_ERROR no genai_config.json in model folder $MODEL (make export MODEL=... FORMAT=onnx)"; exit 3; }
require_requests
OUT=$CASE/out
mkdir -p "$OUT"
use_engine_libs
# onnxruntime-genai dlopens libonnxruntime.so or .so.1 by name; name the one that came with the binary.
if [ -z "${ORT_LIB_PATH:-}" ]; then
    for lib in "$BIN/libonnxruntime.so" "$BIN/libonnxruntime.so.1" "$BIN/../lib/libonnxruntime.so" "$BIN/../lib/libonnxruntime.so.1"; do
        if [ -r "$lib" ]; then ORT_LIB_PATH=$lib; export ORT_LIB_PATH; break; fi
    done
fi
ew_run ew_ort --model "$MODEL" --case "$CASE"  # common.sh: its records; one EW_ERROR sentence if it died; EW_DONE
