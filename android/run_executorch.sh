#!/system/bin/sh
# Run one case (one user's batch of requests) with ExecuTorch's llama runner (llama_main) and
# print machine-readable results on stdout.  POSIX sh: runs under Android's mksh/toybox, busybox
# ash and Linux sh alike.
#
#   run_executorch.sh --bin DIR --model DIR --case DIR [--threads N] [--affinity HEXMASK]
#
# --model is the artifact folder of `make export FORMAT=executorch` (model.pte + tokenizer.json,
# tokenizer.model or tokenizer.bin).  The case folder (made by device_runner/phone.py) holds
# requests.tsv, one line per request:
#   ID <TAB> MAX_TOKENS <TAB> TEMPERATURE <TAB> SEED <TAB> GRAMMAR_FILE|- <TAB> PREFIX_FILE|- <TAB> SEQ_LEN
# and ID.prompt files.  SEQ_LEN is llama_main's --seq_len: prompt + output tokens (the host
# counts the prompt).  llama_main has no grammar sampler and no prompt cache: a request with a
# grammar is an error (EW_ERROR), a shared prefix is evaluated again inside every prompt.
#
# Output, one record per line (device_runner/engines.py parses it), as run_llamacpp.sh:
#   EW_NOTE text / EW_ERROR text
#   EW_BEGIN request id
#   EW_LOG line                   the runner's stderr lines that matter (PyTorchObserver, errors)
#   EW_RC n / EW_RSS_KB n / EW_WALL_MS n
#   EW_TEXT base64                the runner's stdout (echoed prompt, text, PyTorchObserver line)
#   EW_END request id
#   EW_DONE
set -u
. "$(dirname "$0")/common.sh"
read_args "$@"
require_exe llama_main "android/build.sh --only executorch builds it"
[ -d "$MODEL" ] || { echo "EW_ERROR model folder $MODEL is missing"; exit 3; }
PTE=
for f in "$MODEL"/*.pte; do [ -r "$f" ] && { PTE=$f; break; }; done
[ -n "$PTE" ] || { echo "EW_ERROR no .pte file in $MODEL (make export FORMAT=executorch)"; exit 3; }
TOKENIZER=
for f in tokenizer.json tokenizer.model tokenizer.bin; do
    [ -r "$MODEL/$f" ] && { TOKENIZER=$MODEL/$f; break; }
done
[ -n "$TOKENIZER" ] || { echo "EW_ERROR no tokenizer.json, tokenizer.model or tokenizer.bin in $MODEL"; exit 3; }
require_requests
OUT=$CASE/out
mkdir -p "$OUT"
use_engine_libs

setup_measuring

TAB=$(printf '\t')
while IFS="$TAB" read -r id ntok temp seed grammar prefix seqlen; do
    [ -n "$id" ] || continue
    refuse_grammar "$id" "$grammar" llama_main
    [ -n "$seqlen" ] || seqlen=$ntok
    echo "EW_BEGIN request $id"
    set -- "$EXE" --model_path "$PTE" --tokenizer_path "$TOKENIZER" --prompt "$(cat "$CASE/$id.prompt")" \
        --seq_len "$seqlen" --temperature "$temp"
    [ -n "$THREADS" ] && set -- "$@" --cpu_threads "$THREADS"
    started=$(now_ms)
    measured "$OUT/$id.txt" "$OUT/$id.log" "$@"
    ended=$(now_ms)
    grep -E 'PyTorchObserver|rror|failed|out of memory' "$OUT/$id.log" | sed 's/^/EW_LOG /'
    end_record request "$id"
done <"$CASE/requests.tsv"
echo "EW_DONE"
