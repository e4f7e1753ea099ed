"""Bad input to every reader: the dataset files, results files (resume and report) and the phone's
record stream.  Each bad line ends in one HarnessError sentence naming the file (or stream) and the
line; the CLIs exit 2; nothing already written is lost.  Property tests cut and garble valid input:
a reader returns valid data or raises HarnessError, never another exception."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_runner import engines
from device_runner.__main__ import main as runner_main
from device_runner.results import ResultsFile
from eval import dataset
from eval.__main__ import main as eval_main
from eval.errors import HarnessError
from eval.report import markdown, read_results, summarise
from eval.schema import Message, Routine, Session, SessionMeta, User

META = {"time_of_day": "evening", "day_of_week": "weekend", "sun_phase": "after_sunset", "weather": "snowy",
        "outdoor_temp": "cold"}
CUTS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _garble(data: bytes, cut: int, garbage: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(data[:cut])
    for at, junk in garbage:
        out[at:at] = junk
    return bytes(out)


def _damage(size: int):
    """(where to cut, [(where to insert, bytes)]) for a file of `size` bytes."""
    return st.tuples(st.integers(0, size), st.lists(st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=4)),
                                                    max_size=3))


# ---- the dataset's three files ------------------------------------------------------------------

def _user(index: int) -> User:
    routine = Routine.model_validate({"triggers": META, "actions": {"lights": {"brightness": 40, "color": "warm"}}})
    session = Session(session_id=0, meta=SessionMeta(**META), applied_routines=[0],
                      messages=[Message(role="user", text="lamps at 40, warm"), Message(role="assistant", text="Ok.")])
    return User(index=index, character=f"person {index}", routines=[routine], sessions=[session])


def test_dataset_line_that_is_not_utf8_names_file_and_line(tmp_path: Path):
    folder = dataset.write_folder([_user(0), _user(1)], tmp_path / "data")
    path = folder / "characters.jsonl"
    first, second = path.read_bytes().split(b"\n")[:2]
    path.write_bytes(first + b"\n" + second.replace(b"person", b"pers\xffon") + b"\n")
    with pytest.raises(HarnessError, match=r"characters\.jsonl, line 2: not UTF-8 text"):
        dataset.load_folder(folder)


def test_dataset_cut_off_last_line_names_file_and_line(tmp_path: Path):
    folder = dataset.write_folder([_user(0), _user(1)], tmp_path / "data")
    path = folder / "routines.jsonl"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(HarnessError, match=r"routines\.jsonl, line 2: malformed JSON"):
        dataset.load_folder(folder)


@CUTS
@given(st.sampled_from(dataset.FILES), _damage(600))
def test_dataset_reader_returns_users_or_says_why(tmp_path_factory, name, damage):
    folder = dataset.write_folder([_user(0), _user(1)], tmp_path_factory.mktemp("data"))
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(_garble(data, min(damage[0], len(data)), damage[1]))
    try:
        users = dataset.load_folder(folder)
    except HarnessError as exc:
        assert str(folder) in str(exc), str(exc)
    else:
        assert all(isinstance(user, User) for user in users)


# ---- results files: resume (device_runner/results.py) -------------------------------------------

def _row(user: int, case: str = "m/r/rules/host", data: object = None) -> dict:
    truth = [{"triggers": {"time_of_day": "evening"}, "actions": {"tv": {"volume": 10}}}]
    routines = [{"triggers": {"time_of_day": "evening"}, "actions": {"tv": {"volume": 12}}}]
    return {"case": case, "user": user, "model": "m", "runtime": "r", "strategy": "rules", "truth": truth,
            "routines": routines, "timings": {"ttft_ms": 5.0, "prompt_tokens": 10}, "wall_s": 0.5,
            "parse_errors": [], "data": data if data is not None else {"spec": "data/a"},
            "output": "text with a line separator \u2028 inside"}


def _results(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def test_resume_sets_a_torn_last_line_aside_and_says_so(tmp_path: Path, capsys):
    path = tmp_path / "results.jsonl"
    whole = _results([_row(0), _row(1)])
    torn = json.dumps(_row(2)).encode()[:50]
    path.write_bytes(whole + torn)
    results = ResultsFile(path, resume=True)
    assert set(results.done) == {("m/r/rules/host", 0), ("m/r/rules/host", 1)}
    assert path.read_bytes() == whole
    assert (tmp_path / "results.jsonl.corrupt").read_bytes() == torn + b"\n"
    err = capsys.readouterr().err
    assert f"{path}, line 3: the last line was cut off" in err and "results.jsonl.corrupt" in err
    # A second killed run: the first torn line is still there, the second is added after it.
    path.write_bytes(whole + b"{\"case\"")
    ResultsFile(path, resume=True)
    assert (tmp_path / "results.jsonl.corrupt").read_bytes() == torn + b"\n" + b"{\"case\"\n"


def test_resume_keeps_a_whole_last_row_that_only_lacks_its_newline(tmp_path: Path):
    path = tmp_path / "results.jsonl"
    whole = _results([_row(0), _row(1)])
    path.write_bytes(whole[:-1])
    results = ResultsFile(path, resume=True)
    assert set(results.done) == {("m/r/rules/host", 0), ("m/r/rules/host", 1)}
    assert path.read_bytes() == whole and not (tmp_path / "results.jsonl.corrupt").exists()


@pytest.mark.parametrize(("bad", "reason"), [
    (b"{\"case\": \"m/r/rules/host\", \"us", "malformed JSON"),
    (b"[1, 2]", "not a result row"),
    (b"{\"case\": \"m/r/rules/host\", \"user\": \"1\"}", "field 'user' is missing or not an integer"),
    (b"{\"case\": \"m/r/rules/host\", \"user\": 1, \"output\": \"\xff\"}", "not UTF-8 text"),
])
def test_resume_refuses_a_damaged_middle_line_and_changes_nothing(tmp_path: Path, bad: bytes, reason: str):
    path = tmp_path / "results.jsonl"
    content = _results([_row(0)]) + bad + b"\n" + _results([_row(2)])
    path.write_bytes(content)
    with pytest.raises(HarnessError, match=rf"results\.jsonl, line 2: {reason}.*Move that line out"):
        ResultsFile(path, resume=True)
    assert path.read_bytes() == content


@CUTS
@given(_damage(len(_results([_row(0), _row(1), _row(2)]))))
def test_resume_reader_keeps_every_byte_or_says_why(tmp_path_factory, damage):
    folder = tmp_path_factory.mktemp("resume")
    path = folder / "results.jsonl"
    original = _garble(_results([_row(0), _row(1), _row(2)]), damage[0], damage[1])
    path.write_bytes(original)
    try:
        results = ResultsFile(path, resume=True)
    except HarnessError as exc:
        assert str(exc).startswith(f"{path}, line ")
        assert path.read_bytes() == original  # refused: untouched
        return
    kept = path.read_bytes()
    corrupt = folder / "results.jsonl.corrupt"
    set_aside = corrupt.read_bytes()[:-1] if corrupt.exists() else b""
    assert (kept + set_aside).rstrip() == original.rstrip()  # every byte is in one file or the other
    assert kept == b"" or kept.endswith(b"\n")
    assert len(results.done) == sum(1 for line in kept.split(b"\n") if line.strip())


def test_a_killed_run_resumes_and_a_damaged_file_exits_2(tmp_path: Path, capsys):
    out = tmp_path / "out"
    args = ["--device", "host", "--strategy", "rules", "--data", "sample", "--sample-users", "3",
            "--sample-sessions", "3", "--out", str(out), "--no-progress"]
    assert runner_main(args) == 0
    path = out / "results.jsonl"
    rows = path.read_bytes().split(b"\n")[:3]
    path.write_bytes(rows[0] + b"\n" + rows[1] + b"\n" + rows[2][:40])  # killed while writing user 2
    capsys.readouterr()
    assert runner_main([*args, "--resume"]) == 0
    assert "the last line was cut off" in capsys.readouterr().err
    after = path.read_bytes().split(b"\n")
    assert after[:2] == rows[:2]  # finished rows untouched
    assert [json.loads(line)["user"] for line in after if line] == [0, 1, 2]
    assert (out / "results.jsonl.corrupt").read_bytes() == rows[2][:40] + b"\n"
    path.write_bytes(rows[0] + b"\n" + b"garbage\n" + rows[2] + b"\n")
    assert runner_main([*args, "--resume"]) == 2
    assert f"{path}, line 2: malformed JSON" in capsys.readouterr().err


# ---- results files: the report (eval/report.py) -------------------------------------------------

def test_report_leaves_out_a_torn_last_line_and_says_so(tmp_path: Path, capsys):
    path = tmp_path / "results.jsonl"
    path.write_bytes(_results([_row(0), _row(1)]) + b"{\"case\": \"m/r")
    assert [row["user"] for row in read_results(path)] == [0, 1]
    assert f"{path}, line 3: the last line is cut off" in capsys.readouterr().err


@pytest.mark.parametrize(("bad", "reason"), [
    (b"{\"case\": 1,", "malformed JSON"),
    (b"\"a string\"", "not a result row"),
    (b"{\"user\": 1, \"truth\": [3]}", "field 'truth' is not a list of routines"),
    (b"{\"user\": 1, \"timings\": {\"ttft_ms\": \"fast\"}}", "field 'timings.ttft_ms' is not a number"),
    (b"{\"user\": true}", "field 'user' is not an integer"),
])
def test_report_names_a_damaged_line_and_exits_2(tmp_path: Path, capsys, bad: bytes, reason: str):
    path = tmp_path / "results.jsonl"
    path.write_bytes(_results([_row(0)]) + bad + b"\n" + _results([_row(1)]))
    assert eval_main(["report", "--results", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line 2: {reason}" in err and "the results file is damaged" in err, err


@CUTS
@given(_damage(len(_results([_row(0), _row(1)]))))
def test_report_reader_returns_rows_or_says_why(tmp_path_factory, damage):
    path = tmp_path_factory.mktemp("report") / "results.jsonl"
    path.write_bytes(_garble(_results([_row(0), _row(1)]), damage[0], damage[1]))
    try:
        rows = read_results(path)
    except HarnessError as exc:
        assert str(exc).startswith(f"{path}, line ")
        return
    markdown(summarise(rows, mixed_data=True))  # what the report does with them


# ---- the phone's record stream (device_runner/engines.py) ---------------------------------------

def _stream(text: str = " 47 [end of text]\n") -> str:
    encoded = base64.b64encode(text.encode()).decode()
    return "\n".join([
        "EW_NOTE affinity not applied", "EW_BEGIN request 0000", "EW_LOG load time = 10.00 ms", "EW_RC 0",
        "EW_RSS_KB 2048", "EW_WALL_MS 31", *("EW_TEXT " + encoded[i:i + 8] for i in range(0, len(encoded), 8)),
        "EW_END request 0000", "EW_DONE"]) + "\n"


def test_a_valid_stream_reads_whole():
    parsed = engines.parse_case_output(_stream())
    [record] = parsed.records
    assert (record.rc, record.rss_kb, record.wall_ms, record.text) == (0, 2048, 31.0, " 47 [end of text]\n")
    assert parsed.done and parsed.notes == ["affinity not applied"]


@pytest.mark.parametrize(("old", "new", "line", "reason"), [
    ("EW_RC 0", "EW_RC zero", 4, "EW_RC 'zero' is not an integer exit code"),
    ("EW_WALL_MS 31", "EW_WALL_MS 31ms", 6, "EW_WALL_MS '31ms' is not a number"),
    # lines: 1 NOTE, 2 BEGIN, 3 LOG, 4 RC, 5 RSS_KB, 6 WALL_MS, 7-9 TEXT (24 base64 characters), 10 END, 11 DONE
    ("EW_TEXT IDQ3IFtl", "EW_TEXT ID*3IFtl", 10, "the EW_TEXT lines of the record request 0000 are not base64"),
    ("EW_RC 0\n", "", 9, "the record request 0000 has no EW_RC line"),
    ("EW_END request 0000\n", "", 2, "the record request 0000 is cut off"),
    ("EW_BEGIN request 0000\n", "", 9, "EW_END with no record open"),
    ("EW_RSS_KB 2048", "EW_BEGIN request 0001", 5, "a new record begins before the record request 0000"),
])
def test_a_damaged_record_names_the_stream_and_line(old: str, new: str, line: int, reason: str):
    stream = _stream()
    assert old in stream
    with pytest.raises(HarnessError) as caught:
        engines.parse_case_output(stream.replace(old, new, 1))
    message = str(caught.value)
    assert message.startswith(f"the on-device runner's output, line {line}: {reason}"), message
    assert "--resume" in message


def test_a_cut_stream_says_the_script_stopped_and_what_it_said():
    stream = "EW_ERROR out of memory\n" + _stream().split("EW_END")[0]
    with pytest.raises(HarnessError, match=r"line 3: .*cut off.*without EW_DONE.*The runner said: out of memory"):
        engines.parse_case_output(stream)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_stream())), st.lists(st.tuples(st.integers(0, len(_stream())), st.text(min_size=1,
                                                                                                  max_size=4)),
                                                 max_size=3))
def test_the_record_reader_returns_records_or_says_why(cut, garbage):
    stream = _stream()[:cut]
    for at, junk in garbage:
        stream = stream[:at] + junk + stream[at:]
    try:
        parsed = engines.parse_case_output(stream)
    except HarnessError as exc:
        assert str(exc).startswith("the on-device runner's output, line ")
        return
    for record in parsed.records:
        assert isinstance(record.rc, int) and isinstance(record.text, str)
