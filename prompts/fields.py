"""Per-field questions about one session, each answered from the values said in it.

A small base model copies values from its few-shot examples when asked for a whole JSON
object.  Asked one short question per field instead, with a grammar that admits only the
values that were actually said in the session (its numbers in the field's range, its
category words) or "none", it has to choose among real candidates: which of "40" and "47"
the user settled on, whether "cool" was about the lights or the AC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eval.schema import AcMode, Equalizer, InputSource, LightColor, LightMode

from .render import digits

NONE = "none"


@dataclass(frozen=True)
class Field:
    device: str
    name: str
    label: str  # how the question names it
    values: tuple[Any, ...]  # the closed set, or () for a number range
    lo: int = 0
    hi: int = 100
    # A category value -> the words that say it (default: the value itself).
    words: tuple[tuple[Any, str], ...] = ()

    def candidates(self, text: str, numbers: set[int]) -> list[Any]:
        """The values this session could have set, in the order they are first said."""
        lowered = digits(text.lower())
        if not self.values:
            positions = {n: lowered.find(str(n)) for n in numbers if self.lo <= n <= self.hi}
            return sorted(positions, key=lambda n: positions[n])
        found = []
        for value in self.values:
            pattern = dict(self.words).get(value, re.escape(str(value).lower()))
            match = re.search(pattern, lowered)
            if match:
                found.append((match.start(), value))
        return [value for _, value in sorted(found, key=lambda pair: (pair[0], str(pair[1])))]


def _words(enum: Any, **overrides: str) -> tuple[tuple[Any, str], ...]:
    return tuple((member.value, overrides.get(member.name, rf"\b{re.escape(member.value.lower())}\b")) for member in enum)


FIELDS: tuple[Field, ...] = (
    Field("tv", "input_source", "TV input source", tuple(m.value for m in InputSource),
          words=_words(InputSource, HDMI1=r"hdmi ?1\b|hdmi one", HDMI2=r"hdmi ?2\b|hdmi two")),
    Field("tv", "volume", "TV volume", ()),
    Field("tv", "brightness", "TV brightness", ()),
    Field("ac", "mode", "AC mode", tuple(m.value for m in AcMode),
          words=_words(AcMode, COOL=r"\bcool", HEAT=r"\bheat")),
    Field("ac", "temperature", "AC temperature", (), lo=16, hi=30),
    Field("ac", "fan_speed", "AC fan speed", (), lo=0, hi=3),
    Field("lights", "brightness", "lights brightness", ()),
    Field("lights", "color", "lights colour", tuple(m.value for m in LightColor), words=_words(LightColor)),
    Field("lights", "mode", "lights mode", tuple(m.value for m in LightMode), words=_words(LightMode)),
    Field("speaker", "volume", "speaker volume", ()),
    Field("speaker", "equalizer", "speaker equalizer", tuple(m.value for m in Equalizer),
          words=_words(Equalizer, BASS_BOOST=r"\bbass", TREBLE_BOOST=r"\btreble", BALANCED=r"\bbalanced")),
    Field("security", "armed", "security armed", (True, False),
          words=((True, r"\barm(ed|ing)?\b|security on|lock (it |the house )?up"),
                 (False, r"\bdisarm|security off|unarm"))),
    Field("security", "alarm_volume", "alarm volume", ()),
)
