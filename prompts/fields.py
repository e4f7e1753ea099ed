"""The settings a session can set, and what patterns may propose for each: candidates, never answers.

A small base model copies values from its few-shot examples when asked for a whole JSON
object.  Asked one short question per field instead, with a grammar that admits only the
values that were actually said in the session (its numbers in the field's range, in digits
or in words; its category words) or "none", it has to choose among real candidates: which
of "forty" and "47" the user settled on, whether "cool" was about the lights, the AC, or
nothing at all ("cool, thanks").

What the patterns here propose is deliberately generous: every number said anywhere in the
session is a candidate for every numeric field whose range holds it (a number that is not a
setting, "I got in at 7", is the model's to reject), a category value is a candidate as soon
as one of its words is said, in whatever sense, a device is "maybe meant" as soon as any of
its names or nicknames is, and of a device with two numeric settings (the TV's volume and
brightness, the AC's temperature and fan) those whose words a window says, or both when it
says neither.  None of it decides a value.  (`words` are what `hybrid` has always proposed;
`more_words`, the synonyms `incremental` proposes too.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eval.schema import AcMode, Equalizer, InputSource, LightColor, LightMode

from .render import digits, numbers_in_order

NONE = "none"

# Names a device goes by, nicknames included: a device named is a device the session may set.
DEVICE_NAMES: dict[str, str] = {
    "tv": r"\btv\b|\bt\.v\.|\btelly\b|televis|\bscreen|\bbox\b|\btube\b|netflix|you ?tube|\bhdmi|\ba/?v\b|"
          r"\bchannel|\bpicture\b|\bflat ?screen",
    "ac": r"\ba/?c\b|\bair ?con|air[- ]condition|\bclimate|thermostat|\bheat|\bcooling\b|"
          r"\bcool (it|things|the \w+) down|\bdegrees?\b|\bfan\b|\btemperature\b",
    "lights": r"\blight|\blamp|\bbulb|\bchandelier|\bsconce",
    "speaker": r"\bspeaker|\bmusic|\bstereo|\bhi-?fi\b|\btunes\b|\bplaylist|\bsong|\bradio\b|\bpodcast|"
               r"\bsound ?bar|\bjukebox|equali[sz]|\beq\b|\bbass\b|\btreble\b|\bsound system",
    "security": r"\bsecurity|\balarm|\bsiren|\barm(ed|ing)?\b|\bdisarm|\bunarm|\block (it|the \w+ )?up|\bburglar",
}


def devices_named(text: str) -> list[str]:
    """The devices a text may be about (any of their names or nicknames), in DEVICE_NAMES order."""
    lowered = text.lower()
    return [device for device, pattern in DEVICE_NAMES.items() if re.search(pattern, lowered)]


@dataclass(frozen=True)
class Field:
    device: str
    name: str
    label: str  # how the question names it
    values: tuple[Any, ...]  # the closed set, or () for a number range
    lo: int = 0
    hi: int = 100
    # A category value -> the words that say it (default: the value itself); `hybrid` proposes these.
    words: tuple[tuple[Any, str], ...] = ()
    # More ways of saying a value (synonyms, other spellings) that `incremental` proposes too.
    more_words: tuple[tuple[Any, str], ...] = ()
    # Words that may name this setting (a numeric one, where its device has two): "louder", "degrees".
    cue: str = ""

    @property
    def numeric(self) -> bool:
        return not self.values

    def in_range(self, value: int) -> bool:
        return self.lo <= value <= self.hi

    def candidates(self, text: str, numbers: set[int] | list[int] | None = None, generous: bool = False) -> list[Any]:
        """The values this session could have set, in the order they are first said.

        Numeric: every number said (digits or words, read from `text`, plus any of `numbers`)
        in the field's range.  Categories: every value one of whose words is said (`generous`:
        `more_words` too)."""
        if self.numeric:
            said = numbers_in_order(text)
            said += sorted(set(numbers or ()) - set(said))
            return [n for n in said if self.in_range(n)]
        lowered = digits(text.lower())
        words = dict(self.words)
        extra = dict(self.more_words) if generous else {}
        found = []
        for value in self.values:
            patterns = [words.get(value, rf"\b{re.escape(str(value).lower())}\b")]
            patterns += [extra[value]] if value in extra else []
            starts = [m.start() for m in (re.search(p, lowered) for p in patterns) if m]
            if starts:
                found.append((min(starts), value))
        said = [value for _, value in sorted(found, key=lambda pair: (pair[0], str(pair[1])))]
        if generous and said and self.values == (True, False):
            said += [value for value in self.values if value not in said]  # either word said: both answers
        return said

    def said_in(self, text: str) -> bool:
        """Whether `text` says a candidate value of this field (any for a field whose values
        are always candidates)."""
        return bool(self.candidates(text, generous=True))


def _words(enum: Any, **overrides: str) -> tuple[tuple[Any, str], ...]:
    return tuple((member.value, overrides.get(member.name, rf"\b{re.escape(member.value.lower())}\b")) for member in enum)


FIELDS: tuple[Field, ...] = (
    Field("tv", "input_source", "TV input source", tuple(m.value for m in InputSource),
          words=_words(InputSource, HDMI1=r"hdmi ?1\b|hdmi one", HDMI2=r"hdmi ?2\b|hdmi two"),
          more_words=(("HDMI1", r"hdmi[ -]?(1|one)\b"), ("HDMI2", r"hdmi[ -]?(2|two)\b"), ("AV", r"\ba/v\b|\ba\.v\."),
                      ("YouTube", r"\byou ?tube\b"))),
    Field("tv", "volume", "TV volume", (),
          cue=r"volume|loud|quiet|sound|noise|\bmute|hear|\bup\b|\bdown\b|\blevel"),
    Field("tv", "brightness", "TV brightness", (),
          cue=r"bright|\bdim|dark|glare|percent|%|picture|\blevel"),
    Field("ac", "mode", "AC mode", tuple(m.value for m in AcMode),
          words=_words(AcMode, COOL=r"\bcool", HEAT=r"\bheat"),
          more_words=(("cool", r"\bcold air\b|\bchill"), ("heat", r"\bwarm(ing)? (it|the \w+) up"))),
    Field("ac", "temperature", "AC temperature", (), lo=16, hi=30,
          cue=r"degree|°|temp|thermostat|warm|cool|cold|hot|heat|chill"),
    Field("ac", "fan_speed", "AC fan speed", (), lo=0, hi=3, cue=r"\bfan|speed|blow|breeze|draught|draft"),
    Field("lights", "brightness", "lights brightness", ()),
    Field("lights", "color", "lights colour", tuple(m.value for m in LightColor), words=_words(LightColor),
          more_words=(("warm", r"\bwarm"), ("cool", r"\bcool|\bcold\b"))),
    Field("lights", "mode", "lights mode", tuple(m.value for m in LightMode), words=_words(LightMode),
          more_words=(("static", r"\bsteady|\bstill\b|\bconstant|\bsolid\b|\bfixed\b"),
                      ("dynamic", r"\bchanging\b|\bshifting\b|\bcycl|\bmoving\b|\banimated\b"))),
    Field("speaker", "volume", "speaker volume", ()),
    Field("speaker", "equalizer", "speaker equalizer", tuple(m.value for m in Equalizer),
          words=_words(Equalizer, BASS_BOOST=r"\bbass", TREBLE_BOOST=r"\btreble", BALANCED=r"\bbalanced"),
          more_words=(("balanced", r"\bbalanc|\bflat\b|\beven\b"),)),
    # "switch the alarm off", "get the house armed", "security on": generous words for both answers.
    Field("security", "armed", "security armed", (True, False),
          words=((True, r"\barm(ed|ing)?\b|security on|lock (it |the house )?up"),
                 (False, r"\bdisarm|security off|unarm")),
          more_words=((True, r"\barm|\bon\b|\block|\bactivat"),
                      (False, r"\bdisarm|\bunarm|\boff\b|\bunlock|\bdeactivat"))),
    Field("security", "alarm_volume", "alarm volume", ()),
)


def settings_meant(device: str, text: str) -> list[Field]:
    """The numeric settings of `device` a text may be about: those whose cue words it says, or
    all of them when it says none ("the telly at seventy")."""
    numeric = [f for f in FIELDS if f.device == device and f.numeric]
    lowered = text.lower()
    cued = [f for f in numeric if f.cue and re.search(f.cue, lowered)]
    return cued or numeric


def propose(text: str) -> list[tuple[Field, list[Any]]]:
    """For one session's dialogue: each field of a device the session may be about, with its
    candidate values (never empty; the model may still answer none)."""
    named = set(devices_named(text))
    numbers = numbers_in_order(text)
    proposals = []
    for f in FIELDS:
        if f.device not in named:
            continue
        candidates = f.candidates(text, numbers, generous=True)
        if candidates:
            proposals.append((f, candidates))
    return proposals
