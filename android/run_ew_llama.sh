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
# when ew_llama fails says so in one EW_ERROR line naming the request it was running (common.sh
# ew_run, ew_finish), then EW_DONE only if it succeeded.
set -u
. "$(dirname "$0")/common.sh"
CTX=4096
read_args "$@"
require_exe ew_llama "android/build.sh builds it"
[ -r "$MODEL" ] || { echo "EW_ERROR model $MODEL is not readable"; exit 3; }
require_requests
OUT=$CASE/out
mkdir -p "$OUT"
# its records; when it fails, one EW_ERROR sentence naming the request it was running; EW_DONE (common.sh)
ew_run ew_llama --model "$MODEL" --case "$CASE" --ctx "$CTX"
