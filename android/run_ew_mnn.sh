#!/system/bin/sh
# Run one case (one user's batch of requests) with our MNN runner, ew_mnn (android/runners/mnn):
# one process for the whole case, the model loaded once, choices applied as the host does.
# POSIX sh: runs under Android's mksh/toybox, busybox ash and Linux sh alike.
#
#   run_ew_mnn.sh --bin DIR --model DIR --case DIR [--threads N] [--ctx N] [--affinity HEXMASK]
#
# --model is the artifact folder of `make export FORMAT=mnn`.  The case folder (made by
# device_runner/phone_runtime.py) holds requests.tsv, one line per request:
#   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|-
# ID.prompt files and the constraints in the plain format (NAME.choices, NAME.schema.json).
# ew_mnn prints the records itself (EW_BEGIN / EW_STAT / EW_RC / EW_RSS_KB / EW_WALL_MS / EW_TEXT /
# EW_END per request, see ew_mnn.cpp); this script passes them on, and when ew_mnn fails says so
# in one EW_ERROR line naming the request it was running (common.sh ew_finish), then EW_DONE only
# if it succeeded.
# --ctx is accepted and not used: MNN's KV cache grows with the prompt.  MNN's libraries (libMNN,
# libllm; on this machine the wheel's engine) are found beside the binary or in ../lib.
set -u
. "$(dirname "$0")/common.sh"
read_args "$@"
require_exe ew_mnn "android/build.sh --only mnn builds it"
[ -r "$MODEL/config.json" ] || { echo "EW_ERROR no config.json in model folder $MODEL (make export FORMAT=mnn)"; exit 3; }
require_requests
OUT=$CASE/out
mkdir -p "$OUT"
use_engine_libs
ew_run ew_mnn --model "$MODEL" --case "$CASE"  # common.sh: its records; one EW_ERROR sentence if it died; EW_DONE
