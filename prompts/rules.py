"""A no-model extractor: keyword and number patterns over the user's turns.

It is the report's baseline row, so users see what a language model adds over plain
pattern matching.  Deliberately small: the effort belongs on the model's path.
"""

from __future__ import annotations

import re
from typing import Any

from eval.schema import Session

from .render import digits

_DEVICES = {
    "tv": r"\btv\b|television|screen|netflix|youtube|hdmi|\bav\b",
    "ac": r"\bac\b|a/c|air ?con|thermostat|heat|cool(ing)? mode|degrees|fan",
    "lights": r"light|lamp|bulb",
    "speaker": r"speaker|music|sound|playlist|equali[sz]er|bass|treble",
    "security": r"security|alarm|\barm|disarm",
}
_CATEGORIES: list[tuple[str, str, str, Any]] = [
    ("tv", "input_source", r"hdmi ?1\b", "HDMI1"),
    ("tv", "input_source", r"hdmi ?2\b", "HDMI2"),
    ("tv", "input_source", r"\bav\b", "AV"),
    ("tv", "input_source", r"netflix", "Netflix"),
    ("tv", "input_source", r"youtube", "YouTube"),
    ("ac", "mode", r"\bheat(ing)?\b", "heat"),
    ("ac", "mode", r"\bcool(ing)? mode|\bmode\W+cool|\bcool(ing)?\b", "cool"),
    ("ac", "mode", r"\bauto\b", "auto"),
    ("lights", "color", r"\bwarm\b", "warm"),
    ("lights", "color", r"\bcool\b|\bcold white\b", "cool"),
    ("lights", "color", r"\bneutral\b", "neutral"),
    ("lights", "mode", r"\bstatic\b|\bsteady\b", "static"),
    ("lights", "mode", r"\bdynamic\b", "dynamic"),
    ("speaker", "equalizer", r"bass", "bass boost"),
    ("speaker", "equalizer", r"treble", "treble boost"),
    ("speaker", "equalizer", r"balanced|flat", "balanced"),
    ("security", "armed", r"\bdisarm|\bturn off the alarm|\bunarm", False),
    ("security", "armed", r"(?<!dis)\barm(ed)?\b|\block (it|up)", True),
]
_NUMERIC: dict[str, list[tuple[str, str]]] = {
    "tv": [("brightness", r"bright|percent|%"), ("volume", r"volume|loud|\bat\b|\bto\b")],
    "ac": [("fan_speed", r"fan"), ("temperature", r"degree|temp|\bto\b|\bat\b")],
    "lights": [("brightness", r"bright|percent|%|dim|\bto\b|\bat\b")],
    "speaker": [("volume", r"volume|loud|\bat\b|\bto\b")],
    "security": [("alarm_volume", r"alarm|volume|\bat\b|\bto\b")],
}
# "40... no, make it 47" -> "47": the corrected number replaces the first one.
_CORRECTION = re.compile(
    r"\b\d{1,3}\b[^\d\n]{0,25}?\b(?:no|actually|wait|sorry|make it|make that|rather|i mean)\b[^\d\n]{0,15}?\b(\d{1,3})\b"
)
_CLAUSE = re.compile(r"[.!?;]+|,|\band\b|\bthen\b")
_NUMBER = re.compile(r"\b(\d{1,3})\b")


def extract_settings(session: Session) -> dict[str, dict[str, Any]]:
    """Settings the user asked for, by patterns; later mentions override earlier ones."""
    settings: dict[str, dict[str, Any]] = {}
    device: str | None = None
    for message in session.messages:
        if message.role != "user":
            continue
        for clause in _CLAUSE.split(_CORRECTION.sub(r"\1", digits(message.text.lower()))):
            found = [d for d, pattern in _DEVICES.items() if re.search(pattern, clause)]
            device = found[0] if found else device
            if device is None:
                continue
            for dev, name, pattern, value in _CATEGORIES:
                if (dev in found or (dev == device and not found)) and re.search(pattern, clause):
                    settings.setdefault(dev, {})[name] = value
            for raw in _NUMBER.findall(clause):
                _assign_number(settings, device, clause, int(raw))
    return settings


def mentions_device(device: str, text: str) -> bool:
    return re.search(_DEVICES[device], text.lower()) is not None


def _assign_number(settings: dict[str, dict[str, Any]], device: str, clause: str, value: int) -> None:
    for name, pattern in _NUMERIC[device]:
        if re.search(pattern, clause) and _in_range(device, name, value):
            settings.setdefault(device, {})[name] = value
            return


def _in_range(device: str, name: str, value: int) -> bool:
    if (device, name) == ("ac", "temperature"):
        return 16 <= value <= 30
    if (device, name) == ("ac", "fan_speed"):
        return 0 <= value <= 3
    return 0 <= value <= 100
