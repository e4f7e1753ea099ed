"""Loading the three line-aligned files: round trip and every bad input's message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval import dataset
from eval.errors import HarnessError
from eval.schema import Message, Routine, Session, SessionMeta, User

META = {"time_of_day": "evening", "day_of_week": "weekend", "sun_phase": "after_sunset",
        "weather": "snowy", "outdoor_temp": "cold"}


def _user(index: int) -> User:
    routine = Routine.model_validate({"triggers": META, "actions": {"ac": {"temperature": 22, "mode": "heat"}},
                                      "priority": 1})
    session = Session(session_id=0, meta=SessionMeta(**META),
                      messages=[Message(role="user", text="heat to 22 please"),
                                Message(role="assistant", text="Heating to 22.")],
                      applied_routines=[0])
    return User(index=index, character=f"user {index}", routines=[routine], sessions=[session])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return dataset.write_folder([_user(0), _user(1)], tmp_path / "data")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def test_round_trip(folder: Path):
    users = dataset.load_folder(folder)
    assert users == [_user(0), _user(1)]
    assert dataset.load(str(folder)) == users


def test_missing_folder_and_missing_file(tmp_path: Path, folder: Path):
    with pytest.raises(HarnessError, match="does not exist.*sample"):
        dataset.load_folder(tmp_path / "nope")
    (folder / "routines.jsonl").unlink()
    with pytest.raises(HarnessError, match="lacks routines.jsonl"):
        dataset.load_folder(folder)


def test_malformed_json_names_file_and_line(folder: Path):
    path = folder / "sessions.jsonl"
    lines = _lines(path)
    _write(path, [lines[0], lines[1][:-5]])
    with pytest.raises(HarnessError, match=r"sessions\.jsonl, line 2: malformed JSON"):
        dataset.load_folder(folder)


def test_value_outside_the_papers_sets_names_file_line_and_field(folder: Path):
    path = folder / "routines.jsonl"
    lines = _lines(path)
    bad = json.loads(lines[1])
    bad["routines"][0]["actions"]["ac"]["temperature"] = 31
    _write(path, [lines[0], json.dumps(bad)])
    with pytest.raises(HarnessError, match=r"routines\.jsonl, line 2: field 'routines\.0\.actions\.ac\.temperature'"):
        dataset.load_folder(folder)
    path = folder / "sessions.jsonl"
    bad = json.loads(_lines(path)[0])
    bad["sessions"][0]["meta"]["weather"] = "foggy"
    _write(path, [json.dumps(bad), _lines(path)[1]])
    with pytest.raises(HarnessError, match=r"sessions\.jsonl, line 1: field 'sessions\.0\.meta\.weather'.*foggy"):
        dataset.load_folder(folder)


def test_unknown_field_and_bad_routine_index(folder: Path):
    path = folder / "sessions.jsonl"
    bad = json.loads(_lines(path)[0])
    bad["sessions"][0]["applied_routines"] = [3]
    _write(path, [json.dumps(bad), _lines(path)[1]])
    with pytest.raises(HarnessError, match=r"line 1: .*applied_routines' names routine 3"):
        dataset.load_folder(folder)


def test_files_of_different_lengths(folder: Path):
    path = folder / "characters.jsonl"
    _write(path, _lines(path)[:1])
    with pytest.raises(HarnessError, match="characters.jsonl has 1, routines.jsonl has 2"):
        dataset.load_folder(folder)


def test_hub_spec_fails_clearly_offline(monkeypatch, tmp_path: Path):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match="Could not download 'TCLResearchEurope/EdgeWisePersona'.*--data DIR"):
        dataset.load_hf("hf:TCLResearchEurope/EdgeWisePersona@main", cache_dir=str(tmp_path))


def test_hub_spec_without_the_library(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("huggingface_hub"):
            raise ModuleNotFoundError(name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(HarnessError, match=r"needs huggingface_hub.*\[hub\]"):
        dataset.load("hf:TCLResearchEurope/EdgeWisePersona")


DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "edgewise-dev"


@pytest.mark.skipif(not DEV.is_dir(), reason="the hand-written dev set lives outside the project")
def test_dev_set_loads(tmp_path: Path):
    shutil.copytree(DEV, tmp_path / "dev")
    users = dataset.load_folder(tmp_path / "dev")
    assert len(users) == 8 and all(len(u.sessions) == 40 for u in users)
