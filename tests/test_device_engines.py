"""Parsers of the on-device runners' output (device_runner/engines.py), and android/run_llamacpp.sh
itself run on Linux against a stand-in llama-completion."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from device_runner import engines

ROOT = Path(__file__).resolve().parents[1]

# llama.cpp 0.3.36's tools print common_perf_print lines; older ones llama_perf_*_print (both parsed).
LLAMA_LOG_036 = """\
0.01.721.761 I llama_completion: attempting to load saved session from 'p.cache'
0.01.910.379 I llama_completion: session file matches 300 / 320 tokens of prompt
0.02.646.236 I common_perf_print:    sampling time =     358.40 ms
0.02.646.237 I common_perf_print:    samplers time =       1.16 ms /     8 tokens
0.02.646.239 I common_perf_print:        load time =     728.55 ms
0.02.646.240 I common_perf_print: prompt eval time =     186.93 ms /     5 tokens (   37.39 ms per token,    26.75 tokens per second)
0.02.646.241 I common_perf_print:        eval time =     377.20 ms /     2 runs   (  188.60 ms per token,     5.30 tokens per second)
0.02.646.242 I common_perf_print:       total time =     931.21 ms /     7 tokens
"""

LLAMA_LOG = """\
main: attempting to load saved session from 'p.cache'
main: loaded a session with prompt size of 300 tokens
main: session file matches 300 / 320 tokens of prompt
llama_perf_sampler_print:    sampling time =       2.50 ms /     5 runs   (    0.50 ms per token,  2000.00 tokens per second)
llama_perf_context_print:        load time =     210.00 ms
llama_perf_context_print: prompt eval time =      40.00 ms /    20 tokens (    2.00 ms per token,   500.00 tokens per second)
llama_perf_context_print:        eval time =      80.00 ms /     4 runs   (   20.00 ms per token,    50.00 tokens per second)
llama_perf_context_print:       total time =     300.00 ms /    24 tokens
"""


def _record(log: str = LLAMA_LOG, text: str = " 47 [end of text]\n\n\n", kind: str = "request") -> str:
    lines = [f"EW_BEGIN {kind} 0000", *("EW_LOG " + line for line in log.splitlines()), "EW_RC 0",
             "EW_RSS_KB 204800", "EW_WALL_MS 310"]
    encoded = base64.b64encode(text.encode()).decode()
    lines += ["EW_TEXT " + encoded[i:i + 76] for i in range(0, len(encoded), 76)]
    return "\n".join([*lines, f"EW_END {kind} 0000"]) + "\n"


def test_llamacpp_record_and_timings() -> None:
    parsed = engines.parse_case_output("EW_NOTE affinity f0 not applied: no taskset\n" + _record() + "EW_DONE\n")
    assert parsed.done and parsed.notes == ["affinity f0 not applied: no taskset"]
    [record] = parsed.records
    text, reason = engines.llamacpp_text(record.text)
    assert (text, reason) == (" 47", "stop")
    t = engines.llamacpp_timings(record)
    assert t.load_ms == 210.0 and t.prompt_tokens == 320 and t.prompt_tokens_evaluated == 20
    assert t.prefill_tps == 500.0 and t.decode_tps == 50.0  # 4 tokens after the first in 80 ms
    assert t.generated_tokens == 5 and t.ttft_ms == 40.5 and t.peak_rss_mb == 200.0 and t.total_ms == 310.0


def test_llamacpp_036_perf_lines() -> None:
    t = engines.llamacpp_timings(engines.parse_case_output(_record(LLAMA_LOG_036)).records[0])
    assert t.load_ms == 728.55 and t.prompt_tokens == 320 and t.prompt_tokens_evaluated == 5
    assert t.generated_tokens == 3 and t.decode_tps == pytest.approx(2 / 0.3772) and t.sampling_ms == 358.4


def test_llamacpp_prefix_is_charged_once_and_length_finish() -> None:
    prefix = engines.parse_case_output(_record(
        "llama_perf_context_print: prompt eval time =     600.00 ms /   300 tokens (2 ms per token, 500 tokens per second)",
        "x", kind="prefix")).records[0]
    request = engines.parse_case_output(_record(text='{"a": 1')).records[0]
    t = engines.llamacpp_timings(request, prefix)
    assert t.prompt_tokens_evaluated == 320 and t.prefill_tps == pytest.approx(320 / 0.64)
    assert engines.llamacpp_text(request.text) == ('{"a": 1', "length")


def test_executorch_observer_line() -> None:
    out = ('I 00:00:01 generated text...\nPyTorchObserver {"prompt_tokens":100,"generated_tokens":51,'
           '"model_load_start_ms":1000,"model_load_end_ms":1800,"inference_start_ms":2000,'
           '"prompt_eval_end_ms":2500,"first_token_ms":2510,"inference_end_ms":3510,'
           '"aggregate_sampling_time_ms":20,"SCALING_FACTOR_UNITS_PER_SECOND":1000}\n')
    t = engines.executorch_timings(out)
    assert t.load_ms == 800 and t.ttft_ms == 510 and t.prefill_tps == 200 and t.decode_tps == 50
    assert t.generated_tokens == 51 and t.sampling_ms == 20
    with pytest.raises(ValueError, match="PyTorchObserver"):
        engines.executorch_timings("no stats here")


def test_mnn_demo_counters_and_bench_table() -> None:
    demo = """
#################################
prompt tokens num = 120
decode tokens num = 63
 vision time = 0.00 s
  audio time = 0.00 s
prefill time = 0.40 s
 decode time = 2.10 s
prefill speed = 300.00 tok/s
 decode speed = 30.00 tok/s
##################################
"""
    t = engines.mnn_timings(demo)
    assert t.prompt_tokens == 120 and t.generated_tokens == 64 and t.prefill_tps == 300 and t.decode_tps == 30
    assert t.ttft_ms == 400 and t.total_ms == 2500
    table = """
| model | modelSize | backend | threads | precision | llm_demo | speed(tok/s) |
| --- | --- | --- | --- | --- | --- | --- |
| qwen2-0.5b | 400 MB | CPU | 4 | Low | pp512 | 210.55 ± 3.10 |
| qwen2-0.5b | 400 MB | CPU | 4 | Low | tg128 | 35.20 ± 0.40 |
"""
    assert engines.mnn_bench(table) == {"pp512": {"tps": 210.55, "sd": 3.1}, "tg128": {"tps": 35.2, "sd": 0.4}}


def test_ortgenai_model_benchmark_report() -> None:
    report = """Batch size: 1, prompt tokens: 128, tokens to generate: 64
Prompt processing (time to first token):
\tavg (us):       256000.00
\tavg (tokens/s): 500.00
\tp50 (us):       255000.00
\tstddev (us):    1000.00
\tn:              5 * 128 token(s)
Token generation:
\tavg (us):       25000.00
\tavg (tokens/s): 40.00
\tp50 (us):       24900.00
\tstddev (us):    300.00
\tn:              315 * 1 token(s)
Token sampling:
\tavg (us):       50.00
E2E generation (entire generation loop):
\tavg (ms):       1831.00
Peak working set size (bytes): 734003200
"""
    t = engines.ortgenai_timings(report)
    assert t.ttft_ms == 256 and t.prefill_tps == 500 and t.decode_tps == 40 and t.prompt_tokens == 128
    assert t.peak_rss_mb == 700.0 and t.total_ms == 1831 and t.sampling_ms == 0.05


STUB = r"""#!/bin/sh
# A stand-in for llama-completion: records its arguments, prints a text and perf lines.
echo "$@" >> "$(dirname "$0")/calls.txt"
cache=; ro=
while [ $# -gt 0 ]; do
  case "$1" in --prompt-cache) cache=$2; shift ;; --prompt-cache-ro) ro=1 ;; esac; shift
done
if [ -n "$cache" ] && [ -z "$ro" ]; then echo state > "$cache"; fi
sleep 0.3
printf ' 47 [end of text]\n\n\n'
echo "llama_perf_context_print:        load time =     10.00 ms" >&2
echo "llama_perf_context_print: prompt eval time =      5.00 ms /    10 tokens (0.5 ms per token, 2000 tokens per second)" >&2
echo "llama_perf_context_print:        eval time =      4.00 ms /     1 runs   (4 ms per token, 250 tokens per second)" >&2
"""


@pytest.mark.parametrize("shell", ["sh", "mksh", "busybox"])
def test_run_llamacpp_script_on_linux(tmp_path: Path, shell: str) -> None:
    argv = {"sh": ["sh"], "mksh": ["mksh"], "busybox": ["busybox", "sh"]}[shell]
    if subprocess.run(["which", argv[0]], capture_output=True).returncode != 0:
        pytest.skip(f"no {argv[0]}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llama-completion").write_text(STUB)
    os.chmod(bin_dir / "llama-completion", 0o755)
    case = tmp_path / "case 'quoted'"
    case.mkdir()
    (case / "p1.txt").write_text("prefix")
    (case / "g1.gbnf").write_text('root ::= " 47" | " none"')
    for i in range(2):
        (case / f"000{i}.prompt").write_text(f"prefix question {i}")
    (case / "requests.tsv").write_text("0000\t8\t0.0\t0\tg1.gbnf\tp1.txt\n0001\t8\t0.0\t0\tg1.gbnf\tp1.txt\n")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    out = subprocess.run([*argv, str(ROOT / "android" / "run_llamacpp.sh"), "--bin", str(bin_dir), "--model",
                          str(model), "--case", str(case), "--threads", "2", "--ctx", "512"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    parsed = engines.parse_case_output(out.stdout)
    assert parsed.done and parsed.errors == []
    assert [(r.kind, r.id) for r in parsed.records] == [("prefix", "p1.txt"), ("request", "0000"), ("request", "0001")]
    assert all(r.rc == 0 and r.rss_kb and r.rss_kb > 0 for r in parsed.records)  # VmHWM polled from /proc
    assert engines.llamacpp_text(parsed.records[1].text) == (" 47", "stop")
    calls = (bin_dir / "calls.txt").read_text().splitlines()
    assert len(calls) == 3 and "--prompt-cache-ro" in calls[1] and "--grammar-file" in calls[2]
    assert "-t 2" in calls[1] and "-c 512" in calls[1]


def test_build_script_without_ndk_or_zig_says_what_to_do(tmp_path: Path) -> None:
    """Without an NDK, arm64 runners are cross-compiled with zig (tests/test_arm64.py); with
    neither, one sentence names both ways."""
    stub = tmp_path / "python"
    stub.write_text("#!/bin/sh\nexit 1\n")  # an interpreter without the ziglang package
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "ANDROID_NDK"} | {"PYTHON": str(stub),
                                                                         "CACHE": str(tmp_path / "cache")}
    out = subprocess.run(["sh", str(ROOT / "android" / "build.sh"), "--abi", "arm64-v8a"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 3
    assert "zig is missing: make install-cross" in out.stderr and "or set ANDROID_NDK" in out.stderr
