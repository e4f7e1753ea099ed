#!/system/bin/sh
# Run one case (one user's batch of requests) with our ExecuTorch runner, ew_et
# (android/runners/executorch): one process for the whole case, the .pte loaded once, its KV cache
# kept across requests.  POSIX sh: runs under Android's mksh/toybox, busybox ash and Linux sh alike.
#
#   run_ew_et.sh --bin DIR --model DIR --case DIR [--threads N] [--affinity HEXMASK]
#
# --model is the artifact folder of `make export FORMAT=executorch` as pushed (model.pte, and
# ew_et.vocab, which device_runner writes from the tokenizer).  The case folder (made by
# device_runner/phone_runtime.py) holds requests.tsv, one line per request:
#   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|-
# and ID.prompt / ID.tokens files.  ew_et itself prints the records (see ew_et.cpp); this script
# passes them on, and when ew_et fails says so in one EW_ERROR line naming the request it was
# running (common.sh ew_finish), then EW_DONE only if it succeeded.  The ExecuTorch libraries are found beside the
# binary or in ../lib.
set -u
. "$(dirname "$0")/common.sh"
read_args "$@"
require_exe ew_et "android/build.sh --abi host --only executorch builds it"
[ -d "$MODEL" ] || { echo "EW_ERROR model folder $MODEL is missing"; exit 3; }
PTE=
for f in "$MODEL"/*.pte; do [ -r "$f" ] && { PTE=$f; break; }; done
[ -n "$PTE" ] || { echo "EW_ERROR no .pte file in $MODEL (make export FORMAT=executorch)"; exit 3; }
[ -r "$MODEL/ew_et.vocab" ] || { echo "EW_ERROR no ew_et.vocab in $MODEL (device_runner writes it when it pushes the model)"; exit 3; }
require_requests
OUT=$CASE/out
mkdir -p "$OUT"
use_engine_libs
ew_run ew_et --model "$PTE" --case "$CASE" --vocab "$MODEL/ew_et.vocab"  # common.sh: its records; EW_DONE
