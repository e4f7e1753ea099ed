"""A deterministic, offline generator of EdgeWisePersona-format samples that read like people.

The paper made its data in two steps, and so does this module: first the structure (a
character sketch, routines, one consistent context per session, the settings asked for),
sampled to match the paper's Table 1; then a dialogue in the user's voice, written from the
phrase tables in `eval.synth_phrases` (many phrasings per setting, indirect requests,
corrections, clarifying questions, small talk, a personality).

Everything is a pure function of (n_users, n_sessions, seed, style): user i draws from its own
`random.Random` seeded with a string built from seed and i, so a sample with more users
starts with the same users.

Two styles of speech.  `plain` says every value in digits or its plain word, names each device
by its plain name, and makes every number a setting.  `natural` (the default) talks the way
people do: numbers as words ("twenty-two degrees"), numbers that are not settings beside device
talk ("I got in at 7"), device nicknames ("the box", "the big light"), vague requests settled
with a number later in the session ("make it warmer" ... "22 is good"), corrections blurted
mid-sentence or turns later, devices and fields left alone ("don't change the fan"), and setting
words in other senses ("I'm cool with that").  The plan (users, routines, contexts, settings,
labels) is the same in both styles: the plain dialogue is still drawn from the user's random
stream, and the natural one from streams of its own, seeded from seed and user (the user's
speech habits: their names for devices, how often they say numbers as words, ...) and from seed,
user and session (each dialogue, as long as the plain one).

The dialogue can instead be written by a language model, as in the paper's Figure 1: pass a
`writer` (a callable from `WriterInput` to `WriterOutput`; `prompts.writer` makes one over
any runtime).  The plan stays the same (the template dialogue is still drawn, so the random
stream and every other session stay as they were); each written dialogue is checked against
its plan (`check_dialogue`), rewritten with the reasons up to `retries` times, and falls back
to the template dialogue if it never passes.  This module imports no runtime and no prompt.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import synth_phrases as P
from .dataset import FILES, write_folder
from .errors import HarnessError
from .schema import DEVICE_FIELDS, TRIGGER_FIELDS, Actions, Message, Routine, Session, SessionMeta, Triggers, User

LABELS_FILE = "session_labels.jsonl"
OUTPUT_FILES = (*FILES, LABELS_FILE)
# Written next to the data when a language model writes the dialogues (one line per session).
WRITER_LOG_FILE = "writer_log.jsonl"

# --- the paper's Table 1, as sampling weights -------------------------------------------
ROUTINES_PER_USER = {3: 0.16, 4: 0.70, 5: 0.14}  # mean 3.98
TRIGGER_DROP = 0.02  # share of routines that leave one trigger field unset: 4.98 triggers
DEVICES_PER_ROUTINE = {2: 0.20, 3: 0.50, 4: 0.29, 5: 0.01}  # mean 3.11
# Three-field devices are picked more often than two-field ones, so that with an
# occasional dropped field a routine sets about 8.24 fields over its 3.11 devices.
DEVICE_WEIGHTS = {"tv": 1.3, "ac": 1.3, "lights": 1.4, "speaker": 0.6, "security": 0.7}
FIELD_DROP = 0.06
ROUTINE_SHARE = 0.75
STYLES = ("plain", "natural")
DEFAULT_STYLE = "natural"
# Exchanges (user turn + assistant reply) per session: 9.86 messages on average.
EXCHANGES_PER_SESSION = {3: 0.11, 4: 0.26, 5: 0.32, 6: 0.21, 7: 0.10}
SPONTANEOUS_DEVICES = {1: 0.45, 2: 0.45, 3: 0.10}

# --- contexts ---------------------------------------------------------------------------
# A context is consistent when every pair of its fields is: the sun phases possible at each
# time of day, the weather possible at each outdoor temperature, and sunshine only by day.
DAY_WEIGHTS = {"weekday": 0.6, "weekend": 0.4}
SUN_BY_TIME = {
    "morning": {"before_sunrise": 0.4, "daylight": 0.6},
    "afternoon": {"daylight": 1.0},
    "evening": {"daylight": 0.35, "after_sunset": 0.65},
    "night": {"after_sunset": 0.75, "before_sunrise": 0.25},
}
TEMP_WEIGHTS = {"very cold": 0.15, "cold": 0.25, "mild": 0.25, "warm": 0.22, "hot": 0.13}
WEATHER_BY_TEMP = {
    "very cold": {"sunny": 0.25, "cloudy": 0.25, "snowy": 0.5},
    "cold": {"sunny": 0.2, "cloudy": 0.3, "rainy": 0.25, "snowy": 0.25},
    "mild": {"sunny": 0.35, "cloudy": 0.35, "rainy": 0.3},
    "warm": {"sunny": 0.45, "cloudy": 0.25, "rainy": 0.3},
    "hot": {"sunny": 0.7, "cloudy": 0.2, "rainy": 0.1},
}


def context_is_consistent(context: Mapping[str, Any]) -> bool:
    """Whether the set fields of a context or trigger set can hold at once (unset fields are free)."""
    tod, sun = context.get("time_of_day"), context.get("sun_phase")
    temp, weather = context.get("outdoor_temp"), context.get("weather")
    if tod is not None and sun is not None and sun not in SUN_BY_TIME[tod]:
        return False
    if temp is not None and weather is not None and weather not in WEATHER_BY_TEMP[temp]:
        return False
    return not (weather == "sunny" and sun is not None and sun != "daylight")


def _all_contexts() -> list[tuple[dict[str, str], float]]:
    out = []
    for tod, suns in SUN_BY_TIME.items():
        for sun, p_sun in suns.items():
            for day, p_day in DAY_WEIGHTS.items():
                for temp, p_temp in TEMP_WEIGHTS.items():
                    for weather, p_weather in WEATHER_BY_TEMP[temp].items():
                        ctx = {"time_of_day": tod, "day_of_week": day, "sun_phase": sun,
                               "weather": weather, "outdoor_temp": temp}
                        if context_is_consistent(ctx):
                            out.append((ctx, p_sun * p_day * p_temp * p_weather))
    return out


CONTEXTS = _all_contexts()


def _matches(context: Mapping[str, Any], triggers: Mapping[str, Any]) -> bool:
    return all(context[name] == value for name, value in triggers.items())


def _overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether some context matches both trigger sets (they agree on every field both set)."""
    return all(a[name] == b[name] for name in a if name in b)


def _sample_context(rng: random.Random, fixed: Mapping[str, Any] | None = None,
                    avoid: Sequence[Mapping[str, Any]] = ()) -> dict[str, str]:
    candidates = [(c, w) for c, w in CONTEXTS
                  if _matches(c, fixed or {}) and not any(_matches(c, a) for a in avoid)]
    if not candidates:  # every context is taken by some routine: give up avoiding them
        candidates = [(c, w) for c, w in CONTEXTS if _matches(c, fixed or {})]
    contexts, weights = zip(*candidates)
    return dict(rng.choices(contexts, weights)[0])


def _pick(rng: random.Random, weights: Mapping[Any, float]) -> Any:
    return rng.choices(list(weights), list(weights.values()))[0]


# --- characters -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Persona:
    character: str
    remarks: list[str]
    style: dict[str, Any]
    prefs: dict[str, Any]  # "device.field" -> (low, high) or a favourite value


@dataclass(frozen=True)
class _Habits:
    """How one user talks in the natural style; people keep their habits from session to session."""

    nicknames: dict[str, str]  # device -> this user's own name for it (a device not here: its plain name)
    nickname_rate: float  # how often they use it when naming the device
    words: float  # share of numbers said as words
    distract: float  # share of request turns with a number that is no setting ("I got in at 7")
    vague: float  # share of requests that start vague ("make it warmer") and are settled later
    negate: float  # share of sessions in which they leave something alone ("don't touch the fan")


def _habits(rng: random.Random) -> _Habits:
    nicknames = {device: rng.choice(names) for device, (_, names) in P.NICKNAMES.items() if rng.random() < 0.5}
    return _Habits(nicknames=nicknames, nickname_rate=rng.choice([0.6, 0.8, 0.95]),
                   words=rng.choice([0.1, 0.35, 0.7]), distract=rng.choice([0.1, 0.2, 0.35]),
                   vague=rng.choice([0.1, 0.2, 0.3]), negate=rng.choice([0.1, 0.25, 0.4]))


def _persona(rng: random.Random) -> _Persona:
    occupation, remarks = rng.choice(P.OCCUPATIONS)
    habit, prefs, habit_remark = rng.choice(P.HABITS)
    style = P.TEMPERAMENTS[rng.choice(list(P.TEMPERAMENTS))]
    frame = rng.choice(P.CHARACTER_FRAMES)
    temperament = style["sketch"]
    after_article = temperament if frame.startswith("{a} {temperament}") else occupation
    article = "An" if after_article[0].lower() in "aeiou" else "A"
    character = frame.format(a=article, occupation=occupation, habit=habit, temperament=temperament,
                             Temperament=_cap(temperament))
    return _Persona(character, [*remarks, habit_remark], style, prefs)


# --- values -----------------------------------------------------------------------------
PERCENT_RANGES = {"tv.volume": (10, 70), "tv.brightness": (20, 100), "speaker.volume": (5, 80),
                  "security.alarm_volume": (20, 100)}
LIGHT_RANGES = {"morning": (40, 100), "afternoon": (30, 100), "evening": (20, 80), "night": (5, 50), None: (10, 100)}
AC_MODE_BY_TEMP = {
    "very cold": {"heat": 0.9, "auto": 0.1}, "cold": {"heat": 0.8, "auto": 0.2},
    "mild": {"auto": 0.5, "heat": 0.25, "cool": 0.25}, "warm": {"cool": 0.7, "auto": 0.3},
    "hot": {"cool": 0.9, "auto": 0.1}, None: {"cool": 1.0, "heat": 1.0, "auto": 1.0},
}
AC_TEMP_BY_MODE = {"heat": (20, 27), "cool": (16, 23), "auto": (19, 24)}
CATEGORIES = {
    "tv.input_source": {"HDMI1": 1.0, "HDMI2": 1.0, "AV": 0.6, "Netflix": 1.2, "YouTube": 1.2},
    "lights.mode": {"static": 0.65, "dynamic": 0.35},
    "speaker.equalizer": {"bass boost": 1.0, "balanced": 1.2, "treble boost": 0.8},
}


def _number(rng: random.Random, low: int, high: int) -> int:
    value = rng.randint(low, high)
    if high - low >= 20 and rng.random() < 0.55:  # people like round numbers
        value = min(high, max(low, 5 * round(value / 5)))
    return value


def _value(rng: random.Random, key: str, ctx: Mapping[str, Any], persona: _Persona, ac_mode: str) -> Any:
    pref = persona.prefs.get(key)
    if isinstance(pref, tuple):
        return _number(rng, *pref)
    if pref is not None and rng.random() < 0.7:
        return pref
    tod = ctx.get("time_of_day")
    if key in PERCENT_RANGES:
        return _number(rng, *PERCENT_RANGES[key])
    if key in CATEGORIES:
        return _pick(rng, CATEGORIES[key])
    if key == "lights.brightness":
        return _number(rng, *LIGHT_RANGES[tod])
    if key == "lights.color":
        dark = tod in ("evening", "night")
        return _pick(rng, {"warm": 0.6, "neutral": 0.25, "cool": 0.15} if dark else
                     {"warm": 0.25, "neutral": 0.35, "cool": 0.4})
    if key == "ac.mode":
        return ac_mode
    if key == "ac.temperature":
        return rng.randint(*AC_TEMP_BY_MODE[ac_mode])
    if key == "ac.fan_speed":
        return rng.randint(0, 3)
    if key == "security.armed":
        return rng.random() < (0.85 if tod == "night" else 0.6)
    raise KeyError(key)


def _settings(rng: random.Random, fields: Mapping[str, Sequence[str]], ctx: Mapping[str, Any],
              persona: _Persona) -> dict[str, dict[str, Any]]:
    """Values for the given fields, in schema order, fitting the context and the person."""
    ac_mode = _pick(rng, AC_MODE_BY_TEMP[ctx.get("outdoor_temp")])
    return {device: {f: _value(rng, f"{device}.{f}", ctx, persona, ac_mode)
                     for f in DEVICE_FIELDS[device] if f in fields[device]}
            for device in DEVICE_FIELDS if device in fields}


def _routine_fields(rng: random.Random) -> dict[str, list[str]]:
    remaining = dict(DEVICE_WEIGHTS)
    chosen = []
    for _ in range(_pick(rng, DEVICES_PER_ROUTINE)):
        device = _pick(rng, remaining)
        del remaining[device]
        chosen.append(device)
    fields = {}
    for device in chosen:
        names = list(DEVICE_FIELDS[device])
        if rng.random() < FIELD_DROP:
            names.remove(rng.choice(names))
        fields[device] = names
    return fields


def _spontaneous_fields(rng: random.Random) -> dict[str, list[str]]:
    devices = rng.sample(list(DEVICE_FIELDS), _pick(rng, SPONTANEOUS_DEVICES))
    return {d: rng.sample(DEVICE_FIELDS[d], rng.randint(1, len(DEVICE_FIELDS[d]))) for d in devices}


def _routine_triggers(rng: random.Random, n: int) -> list[dict[str, str]]:
    """n consistent trigger sets, no two of which can match the same context."""
    chosen: list[dict[str, str]] = []
    while len(chosen) < n:
        triggers = _sample_context(rng, avoid=chosen)
        if rng.random() < TRIGGER_DROP:
            partial = dict(triggers)
            del partial[rng.choice(TRIGGER_FIELDS)]
            if not any(_overlap(partial, other) for other in chosen):
                triggers = partial
        chosen.append(triggers)
    return chosen


# --- dialogue ---------------------------------------------------------------------------
def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _in_words(rng: random.Random, number: int) -> str:
    """A number as people write it out: "twenty-two", "twenty two", "a hundred"."""
    if number == 100:
        return rng.choice(["a hundred", "one hundred"])
    if number < 20:
        return _UNITS[number]
    tens, units = divmod(number, 10)
    return _TENS[tens - 2] + (rng.choice(["-", " "]) + _UNITS[units] if units else "")


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


OPERATORS = (">=", "<=", "!=", "=", ">", "<")


def _holds(condition: str, values: Mapping[str, Any]) -> bool:
    """Evaluate a template condition such as `v<=40`, `mode=heat&w>v` (see synth_phrases)."""
    for part in condition.split("&"):
        op = next(o for o in OPERATORS if o in part)
        name, literal = part.split(op, 1)
        if name not in values:
            return False
        left = values[name]
        right: Any = values.get(literal, literal)
        if isinstance(left, bool):
            left, right = str(left).lower(), str(right)
        elif isinstance(left, int):
            right = int(right)
        ok = {">=": left >= right, "<=": left <= right, "!=": left != right, "=": left == right,
              ">": left > right, "<": left < right}[op]
        if not ok:
            return False
    return True


def _choose(rng: random.Random, templates: Sequence[str], values: Mapping[str, Any]) -> str | None:
    """A random template whose condition holds, without its condition; None if none fits."""
    usable = []
    for template in templates:
        condition, bar, text = template.rpartition("|")
        if not bar or _holds(condition, values):
            usable.append(text)
    return rng.choice(usable) if usable else None


def _wrong(rng: random.Random, device: str, field: str, value: Any) -> Any:
    """A plausible value the user might say first and then correct."""
    if field == "temperature":
        return rng.choice([v for v in range(value - 3, value + 4) if 16 <= v <= 30 and v != value])
    if field == "fan_speed":
        return rng.choice([v for v in range(4) if v != value])
    if isinstance(value, int):
        return rng.choice([v for d in (5, 7, 10, 13, 15, 20) for v in (value - d, value + d) if 0 <= v <= 100])
    return rng.choice([v for v in P.VALUE_WORDS[(device, field)] if v != value])


@dataclass
class _Chunk:
    """Some fields of one device, asked for together."""

    device: str
    values: dict[str, Any]  # the final values
    inline: tuple[str, Any] | None = None  # (field, wrong value) corrected within the phrase
    later: tuple[str, Any] | None = None  # (field, wrong value) said first, corrected in a later turn
    ask: str | None = None  # field left out, so that the assistant asks for it
    vague: str | None = None  # numeric field asked for vaguely ("warmer"), its value said later (natural)
    settle_now: bool = False  # the vague field is settled in the very next exchange

    def free_fields(self) -> list[str]:
        """Fields still free to correct or to ask for; never "armed" ("disarm... no, arm" reads oddly)."""
        taken = {self.ask, self.vague, *(c[0] for c in (self.inline, self.later) if c)}
        return [f for f in self.values if f != "armed" and f not in taken]

    def vague_fields(self) -> list[str]:
        """Free fields that can be asked for vaguely (numbers with a direction)."""
        return [f for f in self.free_fields() if (self.device, f) in P.VAGUE_REQUESTS]


class _Writer:
    """Writes one session's dialogue for a persona, a context and the settings to ask for."""

    def __init__(self, rng: random.Random, persona: _Persona, meta: Mapping[str, str],
                 settings: Mapping[str, Mapping[str, Any]] | None = None, habits: _Habits | None = None) -> None:
        self.rng, self.persona, self.meta = rng, persona, meta
        self.settings, self.habits, self.natural = settings or {}, habits, habits is not None
        # Numbers a distractor ("my 3 kids") must not say: every value of the session's settings.
        self.avoid = {v for values in self.settings.values() for v in values.values() if type(v) is int}
        day = rng.choice(P.DAY_WORDS[meta["day_of_week"]])
        weather = P.WEATHER_WORDS[meta["weather"]]
        self.slots = {"period": meta["time_of_day"], "day": day, "weather": weather, "Weather": _cap(weather),
                      "temp": P.TEMP_WORDS[meta["outdoor_temp"]]}
        self.remarked = False  # the assistant mentions the weather at most once a session
        self.negated = False  # the user leaves something alone at most once a session (natural)

    def _say(self, device: str, field: str, value: Any) -> str:
        words = P.VALUE_WORDS.get((device, field))
        if words:
            return self.rng.choice(words[value])
        if self.habits and self.rng.random() < self.habits.words:
            return _in_words(self.rng, value)
        return str(value)

    def _field_name(self, device: str, field: str) -> str:
        name = self.rng.choice(P.FIELD_NAMES[(device, field)])
        return self._nickname(device, "the " + name)[4:] if self.natural else name

    def _nickname(self, device: str, phrase: str) -> str:
        """The phrase with the device's plain name replaced by the user's own name for it, if they have one."""
        nickname = self.habits.nicknames.get(device) if self.habits else None
        pattern = P.NICKNAMES[device][0]
        if nickname is None or not re.search(pattern, phrase) or self.rng.random() >= self.habits.nickname_rate:
            return phrase
        return re.sub(pattern, nickname, phrase, count=1)

    def _spoken(self, chunk: _Chunk, field: str) -> str:
        final = self._say(chunk.device, field, chunk.values[field])
        if chunk.inline and chunk.inline[0] == field:
            wrong = chunk.inline[1]
            kind = "category" if isinstance(wrong, str) else "number"
            templates = P.INLINE_CORRECTIONS[kind] + (P.NATURAL_INLINE_CORRECTIONS[kind] if self.natural else [])
            template = _choose(self.rng, templates, {"v": chunk.values[field], "w": wrong})
            return template.format(v=final, w=self._say(chunk.device, field, wrong))
        if chunk.later and chunk.later[0] == field:
            return self._say(chunk.device, field, chunk.later[1])
        return final

    @staticmethod
    def _said(chunk: _Chunk) -> dict[str, Any]:
        """What the user says in the chunk's own turn (the wrong value of a later correction)."""
        said = {f: v for f, v in chunk.values.items() if f not in (chunk.ask, chunk.vague)}
        if chunk.later:
            said[chunk.later[0]] = chunk.later[1]
        return said

    def request(self, chunk: _Chunk) -> str:
        """An imperative phrase asking for the chunk's values, e.g. "set the TV volume to 30"."""
        rng, device = self.rng, chunk.device
        said = self._said(chunk)
        # A field left for the assistant to ask about is still hinted at ("... and switch the TV input").
        vague = [rng.choice(P.CLARIFY[(device, chunk.ask)][0])] if chunk.ask else []
        if chunk.vague:
            vague.append(_choose(rng, P.VAGUE_REQUESTS[(device, chunk.vague)], {"v": chunk.values[chunk.vague]}))
        if self.natural:
            return self._nickname(device, self._request(chunk, said, vague))
        return self._request(chunk, said, vague)

    def _request(self, chunk: _Chunk, said: Mapping[str, Any], vague: list[str]) -> str:
        rng, device = self.rng, chunk.device
        if not said:
            return _join(vague)
        spoken = {f: self._spoken(chunk, f) for f in said}
        whole = _choose(rng, P.DEVICE_REQUESTS.get((device, tuple(said)), []), said)
        if whole and rng.random() < 0.6:
            return " and ".join([whole.format(**spoken), *vague])
        order = list(said)
        rng.shuffle(order)
        head = _choose(rng, P.FIELD_REQUESTS[(device, order[0])], {"v": said[order[0]]}).format(v=spoken[order[0]])
        tails = [_choose(rng, P.FIELD_TAILS[(device, f)], {"v": said[f]}).format(v=spoken[f]) for f in order[1:]]
        return _join([head, *tails, *vague])

    def confirm(self, said: Mapping[str, Mapping[str, Any]]) -> str:
        """The assistant restating values, e.g. "Done. The TV is at volume 30 and on Netflix."."""
        rng, parts = self.rng, []
        for device, values in said.items():
            if not values:
                continue
            words = {f: P.ASSISTANT_WORDS.get((device, f), {}).get(v, str(v)) for f, v in values.items()}
            whole = _choose(rng, P.DEVICE_CONFIRMS.get((device, tuple(values)), []), values)
            if whole and rng.random() < 0.6:
                parts.append(whole.format(**words))
                continue
            fragments = [_choose(rng, P.CONFIRM_FRAGMENTS[(device, f)], {"v": v}).format(v=words[f])
                         for f, v in values.items()]
            parts.append(f"{rng.choice(P.DEVICE_SUBJECTS[device])} {_join(fragments)}.")
        return (rng.choice(P.ACKS) + " ".join(parts)).strip() if parts else rng.choice(["Sure.", "Of course.", "Okay."])

    def context_remark(self) -> str:
        return _choose(self.rng, [line for cond, lines in P.USER_CONTEXT_REMARKS if _holds(cond, self.meta)
                                  for line in lines], {}) or ""

    # exchanges
    def _distractor(self, templates: Sequence[str]) -> str:
        """A sentence with a number that is no setting and none of the session's values."""
        def number(low: int, high: int) -> int:
            return self.rng.choice([n for n in range(low, high + 1) if n not in self.avoid] or [high + 1])
        text = self.rng.choice(templates)
        counts = {"k": number(2, 12)}
        if "{k}" in text and self.rng.random() < 0.3:  # "my three kids"
            counts["k"] = _in_words(self.rng, counts["k"])
        return text.format(h=number(5, 11), m=number(5, 45), **counts)

    def _negation(self, chunks: Sequence[_Chunk]) -> str | None:
        """Something the user leaves alone: a device or field the session does not set, or other rooms' lights."""
        kinds = [[line for d, lines in P.NEGATED_DEVICES.items() if d not in self.settings for line in lines],
                 [line for (d, f), lines in P.NEGATED_FIELDS.items() if d in {c.device for c in chunks}
                  and f not in self.settings.get(d, {}) for line in lines],
                 P.NEGATED_ROOMS if any(c.device == "lights" for c in chunks) else []]
        kinds = [lines for lines in kinds if lines]
        if not kinds:
            return None
        line = self.rng.choice(self.rng.choice(kinds))
        return self.rng.choice(P.NEGATION_JOINS).format(n=line, N=_cap(line))

    def turn(self, chunks: Sequence[_Chunk], prefix: str) -> list[tuple[str, str]]:
        """The user's turn asking for some chunks, the reply, and any clarifying exchanges."""
        rng, style = self.rng, self.persona.style
        phrases = [self.request(c) for c in chunks]
        said_first = {f"{chunks[0].device}.{f}": v for f, v in self._said(chunks[0]).items()}
        pre = _choose(rng, [p for cond, lines in P.INDIRECT if _holds(cond, said_first) for p in lines], {})
        if pre and rng.random() < 0.35:
            first = rng.choice(P.INDIRECT_JOINS).format(pre=pre, x=phrases[0], X=_cap(phrases[0]))
        else:
            first = rng.choice(style["wrap"]).format(x=phrases[0], X=_cap(phrases[0]))
        rest = [rng.choice(style["more"]).format(x=p, X=_cap(p)) for p in phrases[1:]]
        tail: list[str] = []
        if self.habits:
            draw = rng.random()
            if draw < 0.6 * self.habits.distract:  # "I got in at 7, could you ..." (before any device is named)
                lead = self._distractor(P.DISTRACTOR_LEADS)
                if not prefix and rng.random() < 0.5 and first[1:2].islower():
                    first = f"{lead}, {first[:1].lower()}{first[1:]}"
                else:
                    prefix = " ".join(filter(None, [f"{lead}.", prefix]))
            elif draw < self.habits.distract:
                tail.append(self._distractor(P.DISTRACTOR_TAILS))
            if not self.negated and rng.random() < self.habits.negate:
                self.negated = True  # once a session is plenty
                tail.append(self._negation(chunks) or "")
        user = " ".join(filter(None, [prefix, first, *rest, *tail]))
        said: dict[str, dict[str, Any]] = {}
        for c in chunks:
            said.setdefault(c.device, {}).update(self._said(c))
        reply = self.confirm(said)
        asks = [(c, c.ask) for c in chunks if c.ask]
        exchanges = []
        for c, field in asks:
            reply += " " + rng.choice(P.CLARIFY[(c.device, field)][1])
            exchanges.append((user, reply))
            user = _cap(rng.choice(P.CLARIFY_ANSWERS).format(v=self._say(c.device, field, c.values[field])))
            reply = self.confirm({c.device: {field: c.values[field]}})
        if not self.remarked and rng.random() < 0.2:
            self.remarked = True
            reply += " " + rng.choice(P.ASSISTANT_CONTEXT_REMARKS).format(**self.slots)
        for c in chunks:
            if c.vague:
                reply += " " + rng.choice(P.VAGUE_ACKS).format(f=self._field_name(c.device, c.vague))
        exchanges.append((user, reply))
        return exchanges

    def settle(self, chunk: _Chunk) -> tuple[str, str]:
        """The user giving the exact value of a vague request: just after it, or later naming the field."""
        field, value = chunk.vague, chunk.values[chunk.vague]
        said = self._say(chunk.device, field, value)
        templates = P.VAGUE_SETTLES_NOW if chunk.settle_now else P.VAGUE_SETTLES_LATER
        user = _cap(self.rng.choice(templates).format(v=said, V=_cap(said), f=self._field_name(chunk.device, field)))
        return self._nickname(chunk.device, user), self.confirm({chunk.device: {field: value}})

    def correction(self, chunk: _Chunk) -> tuple[str, str]:
        field, wrong = chunk.later
        final = chunk.values[field]
        kind = "category" if isinstance(final, str) else "number"
        templates = P.LATER_CORRECTIONS[kind] + (P.NATURAL_LATER_CORRECTIONS[kind] if self.natural else [])
        template = _choose(self.rng, templates, {"v": final, "w": wrong})
        name = self._field_name(chunk.device, field)
        said = self._say(chunk.device, field, final)
        user = _cap(template.format(f=name, v=said, V=_cap(said), w=self._say(chunk.device, field, wrong)))
        return self._nickname(chunk.device, user), self.confirm({chunk.device: {field: final}})

    def opener(self) -> tuple[str, str]:
        tod = self.meta["time_of_day"]
        user = self.rng.choice(P.GREETINGS[tod])
        if self.rng.random() < 0.6:
            user += " " + self.context_remark()
        return user, self.rng.choice(P.ASSISTANT_GREETINGS[tod])

    def weather(self) -> tuple[str, str]:
        answer = self.rng.choice(P.WEATHER_ANSWERS).format(**self.slots)
        sun = P.SUN_REMARKS[self.meta["sun_phase"]]
        if sun and self.rng.random() < 0.5:
            answer += " " + sun
        return self.rng.choice(P.WEATHER_QUESTIONS), answer

    def chat(self, remark: str) -> tuple[str, str]:
        return remark, self.rng.choice(P.CHAT_REPLIES)

    def closer(self) -> tuple[str, str]:
        thanks = self.persona.style["thanks"]
        if self.natural and self.rng.random() < 0.4:
            thanks = P.OTHER_SENSE_THANKS
        user = self.rng.choice(thanks)
        reply = _choose(self.rng, P.ASSISTANT_CLOSERS, self.meta).format(**self.slots)
        return user, reply


def _plan(rng: random.Random, persona: _Persona, settings: Mapping[str, Mapping[str, Any]],
          target: int, habits: _Habits | None = None) -> tuple[list[list[_Chunk]], list[str]]:
    """Group the settings into turns and choose the extra exchanges, `target` exchanges in all.

    Natural speech changes its mind more often and leaves some numbers vague at first."""
    chunks = []
    for device, values in settings.items():
        fields = list(values)
        if len(fields) == 3 and rng.random() < 0.3:
            alone = rng.choice(fields)
            chunks.append(_Chunk(device, {alone: values[alone]}))
            fields.remove(alone)
        chunks.append(_Chunk(device, {f: values[f] for f in fields}))
    rng.shuffle(chunks)
    natural = habits is not None
    rate = persona.style["corrections"] * (1.5 if natural else 1.0)
    for chunk in chunks:
        draw = rng.random()
        if draw < 0.15 * rate and chunk.free_fields():
            field = rng.choice(chunk.free_fields())
            chunk.inline = (field, _wrong(rng, chunk.device, field, chunk.values[field]))
        elif draw < 0.25 * rate and chunk.free_fields():
            field = rng.choice(chunk.free_fields())
            chunk.later = (field, _wrong(rng, chunk.device, field, chunk.values[field]))
        if habits and rng.random() < habits.vague and chunk.vague_fields():
            chunk.vague = rng.choice(chunk.vague_fields())
            chunk.settle_now = rng.random() < 0.5
        if rng.random() < 0.12 and chunk.free_fields():
            chunk.ask = rng.choice(chunk.free_fields())
    turns = [[c] for c in chunks]
    extras = [name for name, p in (("opener", 0.4), ("weather", 0.15), ("chat", 0.3 * persona.style["chat"]),
                                   ("closer", 0.55)) if rng.random() < p]

    def count() -> int:
        return len(turns) + len(extras) + sum(bool(c.ask) + bool(c.later) + bool(c.vague) for c in chunks)

    # Fit to the target length by adding or removing whatever is there to add or remove;
    # corrections are added rarely (weight 1), so that they stay the person's habit, not padding.
    while count() != target:
        options: list[tuple[str, Any, float]] = []
        if count() > target:
            options += [("drop extra", e, 1.0) for e in extras]
            options += [("drop later", c, 1.0) for c in chunks if c.later]
            options += [("drop ask", c, 1.0) for c in chunks if c.ask]
            options += [("drop vague", c, 1.0) for c in chunks if c.vague]
            options += [("merge", i, 1.0) for i in range(len(turns) - 1)]
        else:
            options += [("extra", e, 4.0) for e in ("opener", "weather", "closer") if e not in extras]
            if extras.count("chat") < len(persona.remarks) - 1:  # one is kept for the first turn
                options.append(("extra", "chat", 4.0 * persona.style["chat"]))
            options += [("ask", c, 1.5) for c in chunks if not c.ask and c.free_fields()]
            options += [("later", c, 2.0 * persona.style["corrections"]) for c in chunks
                        if not (c.later or c.inline) and c.free_fields()]
            options += [("split", i, 3.0) for i, t in enumerate(turns) if len(t) > 1]
            if natural:
                options += [("vague", c, 1.0) for c in chunks if c.vague_fields()]
        if not options:
            break
        action, item, _ = rng.choices(options, [weight for *_, weight in options])[0]
        if action == "drop extra":
            extras.remove(item)
        elif action == "drop later":
            item.later = None
        elif action == "drop ask":
            item.ask = None
        elif action == "drop vague":
            item.vague = None
        elif action == "vague":
            item.vague = rng.choice(item.vague_fields())
            item.settle_now = rng.random() < 0.5
        elif action == "merge":
            turns[item:item + 2] = [turns[item] + turns[item + 1]]
        elif action == "extra":
            extras.append(item)
        elif action == "ask":
            item.ask = rng.choice(item.free_fields())
        elif action == "later":
            field = rng.choice(item.free_fields())
            item.later = (field, _wrong(rng, item.device, field, item.values[field]))
        elif action == "split":
            turns[item:item + 1] = [[c] for c in turns[item]]
    return turns, extras


def _dialogue(rng: random.Random, persona: _Persona, meta: Mapping[str, str],
              settings: Mapping[str, Mapping[str, Any]], exchanges: int | None = None,
              habits: _Habits | None = None) -> list[Message]:
    """A session's dialogue, in natural speech with the user's `habits` (else plain); `exchanges`
    (user turn + reply) is drawn from Table 1 unless given."""
    target = _pick(rng, EXCHANGES_PER_SESSION) if exchanges is None else exchanges
    turns, extras = _plan(rng, persona, settings, target, habits)
    writer = _Writer(rng, persona, meta, settings, habits)
    remarks = rng.sample(persona.remarks, len(persona.remarks))  # each said at most once a session
    prefix = ""
    if "opener" not in extras:
        prefix = rng.choice(["", "", rng.choice(P.GREETINGS[meta["time_of_day"]]), writer.context_remark(),
                             remarks[-1]])
    blocks = [writer.turn(turn, prefix if i == 0 else "") for i, turn in enumerate(turns)]
    # Later corrections come after their own turn, anywhere before the end.
    owners = list(range(len(blocks)))  # owners[k]: which turn block k is, -1 for inserted blocks
    for i, turn in enumerate(turns):
        for chunk in turn:
            if chunk.later:
                position = rng.randint(owners.index(i) + 1, len(blocks))
                blocks.insert(position, [writer.correction(chunk)])
                owners.insert(position, -1)
    # A vague request is settled in the next exchange (one per turn, in the same block, so
    # that nothing comes between), or later on naming its field.
    for i, turn in enumerate(turns):
        now = [c for c in turn if c.vague and c.settle_now][:1]
        for chunk in turn:
            if chunk.vague and chunk in now:
                blocks[owners.index(i)].append(writer.settle(chunk))
            elif chunk.vague:
                chunk.settle_now = False
                position = rng.randint(owners.index(i) + 1, len(blocks))
                blocks.insert(position, [writer.settle(chunk)])
                owners.insert(position, -1)
    for extra in extras:
        if extra in ("weather", "chat"):
            if extra == "weather":
                block = [writer.weather()]
            elif habits and rng.random() < 0.4:
                block = [writer.chat(rng.choice(P.OTHER_SENSE_CHAT))]
            else:
                block = [writer.chat(remarks.pop(0))]
            blocks.insert(rng.randint(1 if prefix else 0, len(blocks)), block)
    if "opener" in extras:
        blocks.insert(0, [writer.opener()])
    if "closer" in extras:
        blocks.append([writer.closer()])
    messages = []
    for user, reply in (exchange for block in blocks for exchange in block):
        messages += [Message(role="user", text=user), Message(role="assistant", text=reply)]
    return messages


# --- writing sessions with a language model ---------------------------------------------
SUMMARY_LINES = 15  # earlier sessions a writer is reminded of (the most recent ones)
MIN_MESSAGES, MAX_MESSAGES = 2, 24  # a written dialogue's length, checked
DEFAULT_RETRIES = 2


@dataclass(frozen=True)
class WriterInput:
    """One planned session, as plain data: what a session writer is asked to put in words."""

    user_index: int
    session_id: int
    character: str  # the user's personality sketch (characters.jsonl)
    context: dict[str, str]  # the session's context (SessionMeta as plain strings)
    settings: dict[str, dict[str, Any]]  # device -> field -> value the user must end up asking for
    routine: int | None  # index of the routine behind the session; None = spontaneous
    summary: tuple[str, ...]  # one line per earlier session of this user, oldest first
    n_messages: int  # the length the statistics ask for (the template dialogue's)
    attempt: int = 1  # 1 = first try; later tries carry `feedback`
    feedback: tuple[str, ...] = ()  # why the previous try was rejected
    seed: int = 0  # for the writer's sampling: differs per sample seed, user, session and try


@dataclass(frozen=True)
class WriterOutput:
    """What a writer made of a WriterInput: the dialogue, or why there is none."""

    messages: tuple[tuple[str, str], ...] = ()  # (role, text) in order; roles as written
    raw: str = ""  # the writer's text as it came (logged when the try is rejected)
    error: str | None = None  # why no dialogue could be read from `raw`
    info: dict[str, Any] = field(default_factory=dict)  # for the log: prompt sha256, tokens, seconds


# A session writer; prompts.writer.RuntimeWriter is one.  It may raise HarnessError (an
# unreachable endpoint, say), which stops the run: nothing is written.
Writer = Callable[[WriterInput], WriterOutput]

# How a user names each value of a closed-set field (regular expressions, whole words,
# case-insensitive); broader than VALUE_WORDS, which only needs to cover the templates.
_VALUE_PATTERNS: dict[tuple[str, str], dict[Any, str]] = {
    ("tv", "input_source"): {"HDMI1": r"hdmi[\s-]?1", "HDMI2": r"hdmi[\s-]?2", "AV": r"av",
                             "Netflix": r"netflix", "YouTube": r"youtube"},
    ("ac", "mode"): {"cool": r"cool(?:ing)?", "heat": r"heat(?:ing)?", "auto": r"auto(?:matic)?"},
    ("lights", "color"): {"warm": r"warm", "cool": r"cool", "neutral": r"neutral"},
    ("lights", "mode"): {"static": r"static|steady", "dynamic": r"dynamic"},
    ("speaker", "equalizer"): {"bass boost": r"bass[\s-]?boost(?:ed)?", "balanced": r"balanced",
                               "treble boost": r"treble[\s-]?boost(?:ed)?"},
    ("security", "armed"): {
        True: r"arm(?:ed|ing)?|(?:alarm|security)(?: system)? on"
              r"|(?:turn on|switch on|activate|enable|set) the (?:alarm|security)(?: system)?(?! volume)",
        False: r"disarm(?:ed|ing)?|(?:alarm|security)(?: system)? off"
               r"|(?:turn off|switch off|deactivate|disable) the (?:alarm|security)(?: system)?(?! volume)"},
}
# Words that make a clause about a device: its names, and values only it has.
_DEVICE_WORDS = {
    "tv": r"tv|telly|television|screen|(?:goggle )?box|netflix|youtube|hdmi\s?\d?|av",
    "ac": r"ac|a/c|air[\s-]?con\w*|thermostat|heat(?:ing|er)?|climate|degrees?"
          r"|(?:cool|warm|heat) (?:it|things|the (?:place|room|house|flat)) (?:down|up)",
    "lights": r"lights?|lamps?|bulbs?|lighting|overheads?",
    "speaker": r"speakers?|music|playlist|equali[sz]er|eq|bass|treble|tunes|stereo|hi-fi|sound system",
    "security": r"security|alarm|siren|arm(?:ed)?|disarm(?:ed)?",
}
# Words that name the device itself (not one of its values).
_STRICT_DEVICE_WORDS = {
    "tv": r"tv|telly|television|screen|(?:goggle )?box", "ac": r"ac|a/c|air[\s-]?con\w*|thermostat|climate control",
    "lights": r"lights?|lamps?|bulbs?|lighting|overheads?",
    "speaker": r"speakers?|music|equali[sz]er|eq|stereo|hi-fi|sound system",
    "security": r"security|alarm|siren",
}
# Words naming a numeric field: (pattern, device it implies or None for the current device, field).
_FIELD_WORDS: list[tuple[str, str | None, str]] = [
    (r"degrees?|temperature|thermostat", "ac", "temperature"),
    (r"fan(?:\s?speed)?", "ac", "fan_speed"),
    (r"siren|alarm volume", "security", "alarm_volume"),
    (r"volume|loud(?:er|ness)?|quiet(?:er)?|sound", None, "volume"),
    (r"bright(?:ness|er)?|dim(?:mer)?|percent", None, "brightness"),
]
_NUMERIC_RANGES = {("ac", "temperature"): (16, 30), ("ac", "fan_speed"): (0, 3)}
_NUMERIC = {(d, f) for d, fields in DEVICE_FIELDS.items() for f in fields if (d, f) not in _VALUE_PATTERNS}
# A device's field when a number comes with the device and no field word ("lights to 40").
_DEFAULT_FIELD = {"tv": "volume", "lights": "brightness", "speaker": "volume", "security": "alarm_volume"}
_GENERIC = {("lights", "color"), ("ac", "mode")}  # fields whose values are everyday words
_GENERIC_DEVICES = {"lights", "ac"}
_ALL_VALUE_WORDS = [pattern for values in _VALUE_PATTERNS.values() for pattern in values.values()]
_CLAUSE = re.compile(r"[.!?;:,]+|\s(?:and|then|but|plus)\s")
_NEGATED = r"(?:\bnot|\bfrom|\binstead of|\brather than|\bno longer)\s+(?:the\s+|a\s+)?"
# Numbers that are not settings: times of day, counts of things ("nine hours", "three episodes").
# Clock times, removed before a turn is cut into clauses (the colon of "7:30" would cut it),
# and value words in another sense ("I'm cool with that": fine with it, not a colour).
_ASIDES = re.compile(r"\b\d{1,2}:\d\d\b|\b(?:i'm|i am|we're|we are|you're|you are) cool\b"
                    r"|\bkept (?:its|my|his|her|their|our) cool\b")
_NOT_A_SETTING = re.compile(r"\b\d{1,2}(?::\d\d)?\s*(?:am|pm|o'clock)\b|\b\d{1,2}:\d\d\b|\b\d+\s+(?:hundred|thousand)\b"
                            r"|\b\d+\s+(?!degrees\b|thanks\b)[a-z']{3,}s\b|\bhdmi[\s-]?\d\b")
_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORDS = re.compile(r"\b(?:(?:a|one) hundred|(?:" + "|".join(_TENS) + r")(?:[\s-](?:"
                           + "|".join(_UNITS[1:10]) + r"))?|" + "|".join(reversed(_UNITS)) + r")\b", re.IGNORECASE)


def _word_number(words: str) -> str:
    parts = words.lower().replace("-", " ").split()
    if parts[-1] == "hundred":
        return "100"
    if parts[0] in _TENS:
        return str(10 * (_TENS.index(parts[0]) + 2) + (_UNITS.index(parts[1]) if len(parts) > 1 else 0))
    return str(_UNITS.index(parts[0]))


def _in_digits(text: str) -> str:
    """Lower case, numbers written as words in digits: "Twenty-two degrees" -> "22 degrees"."""
    return _NUMBER_WORDS.sub(lambda m: _word_number(m.group(0)), text).lower()


def _names(pattern: str, text: str) -> bool:
    return re.search(rf"\b(?:{pattern})\b", text) is not None


def _values_named(device: str, name: str, text: str) -> set[Any]:
    """The values of a closed-set field a text names, leaving out negated ones ("not YouTube")."""
    return {value for value, pattern in _VALUE_PATTERNS[(device, name)].items()
            if re.search(rf"(?<!\w)(?:{pattern})\b", re.sub(_NEGATED + rf"\b(?:{pattern})\b", " ", text))}


def _said(user_text: str, device: str, name: str, value: Any) -> bool:
    if (device, name) in _VALUE_PATTERNS:
        return value in _values_named(device, name, user_text)
    return re.search(rf"(?<![\d.]){value}(?![\d])", user_text) is not None


@dataclass
class _Stated:
    """What the user's turns say about each field."""

    numbers: dict[tuple[str, str], int] = field(default_factory=dict)  # the last number given
    # The values named in the last user turn that names any; `strict`: only turns that also
    # name the device itself (to tell "my arm hurts" or "it's warm out" from a setting).
    categories: dict[tuple[str, str], set[Any]] = field(default_factory=dict)
    strict: dict[tuple[str, str], set[Any]] = field(default_factory=dict)


def _stated(messages: Sequence[tuple[str, str]]) -> _Stated:
    """What the user states, clause by clause.

    A clause's device and field come from its words, else from the clause before in the
    same turn, else from the assistant's question just before ("What temperature?" -> "22.").
    A value shared by two fields ("cool") counts for the field of the clause's device.
    """
    out = _Stated()
    device = name = None
    for role, text in messages:
        text = _ASIDES.sub(" ", _in_digits(text))
        if role != "user":
            # Only a closing question sets the scene for the next turn, from its own words.
            device = name = None
            text = re.split(r"[.!]\s", text.rstrip())[-1] if text.rstrip().endswith("?") else ""
        turn: dict[tuple[str, str], set[Any]] = {}
        # "I meant cool, not auto": a negated value is no value, whichever clause it ends up in.
        text = re.sub(_NEGATED + r"(?:\d+|" + "|".join(_ALL_VALUE_WORDS) + r")\b", " ", text)
        turn_devices = {d for d, pattern in _STRICT_DEVICE_WORDS.items() if _names(pattern, text)}
        for clause in _CLAUSE.split(text):
            devices = [d for d, pattern in _DEVICE_WORDS.items() if _names(pattern, clause)]
            if devices:
                device, name = devices[0], None
            for pattern, implied, f in _FIELD_WORDS:
                d = implied or device
                if _names(pattern, clause) and (d, f) in _NUMERIC and (implied is None or not devices or d in devices):
                    device, name = d, f
                    break
            if role != "user":
                continue
            for (d, f) in _VALUE_PATTERNS:
                # Everyday words ("warm", "cool", "auto") count for the lights' colour and the
                # AC's mode only in a clause about that device, or in a turn naming it and not
                # the other.
                if (d, f) in _GENERIC and device != d and (device in _GENERIC_DEVICES or d not in turn_devices):
                    continue
                named = _values_named(d, f, clause)
                if named:
                    turn.setdefault((d, f), set()).update(named)
            if device is None:
                continue
            clause = re.sub(_NEGATED + r"\d+", " ", _NOT_A_SETTING.sub(" ", clause))
            for raw in re.findall(r"(?<![\w.])\d{1,3}(?![\w.]\d)", clause):
                value = int(raw)
                target = name or _DEFAULT_FIELD.get(device)
                if device == "ac" and target is None:
                    target = "temperature" if value >= 16 else "fan_speed"
                low, high = _NUMERIC_RANGES.get((device, target), (0, 100))
                if target is not None and (device, target) in _NUMERIC and low <= value <= high:
                    out.numbers[(device, target)] = value
        for key, values in turn.items():
            out.categories[key] = values
            if _names(_STRICT_DEVICE_WORDS[key[0]], text):
                out.strict[key] = values
        if role == "user":
            device = name = None
    return out


def _spoken(value: Any) -> str:
    return {True: "armed", False: "disarmed"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def check_dialogue(messages: Sequence[tuple[str, str]], settings: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Why a written dialogue does not express its planned settings; [] when it does.

    Checks: MIN_MESSAGES to MAX_MESSAGES non-empty messages, alternating user/assistant from
    the user; every planned value said in the user's turns (numbers in digits or words,
    categories by their words); for each planned field, the last value the user states (by
    clause, for numbers; by turn, for categories) is the planned one; no value stated for a
    field the plan does not set.  Deliberately simple patterns: a false alarm costs a rewrite.
    """
    reasons = []
    if not MIN_MESSAGES <= len(messages) <= MAX_MESSAGES:
        reasons.append(f"the dialogue has {len(messages)} messages; write between {MIN_MESSAGES} and {MAX_MESSAGES}")
    for i, (role, text) in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            reasons.append(f"message {i + 1} is from {role!r} but should be from the {expected}: "
                           "messages alternate user, assistant, user, ..., starting with the user")
            break
    empty = [i + 1 for i, (_, text) in enumerate(messages) if not text.strip()]
    if empty:
        reasons.append(f"messages {empty} are empty")
    user_text = _ASIDES.sub(" ", _in_digits(" \n ".join(text for role, text in messages if role == "user")))
    stated = _stated(messages)
    for device, values in settings.items():
        for name, value in values.items():
            where = f"{device}.{name}"
            if not _said(user_text, device, name, value):
                reasons.append(f"{where}: the user never says {_spoken(value)}")
                continue
            if (device, name) in _VALUE_PATTERNS:
                last = stated.categories.get((device, name))
                if last and value not in last:
                    reasons.append(f"{where}: the user's last word on it is {' / '.join(sorted(map(_spoken, last)))}, "
                                   f"but it must end as {_spoken(value)}")
            elif stated.numbers.get((device, name), value) != value:
                reasons.append(f"{where}: the user's last word on it is {stated.numbers[(device, name)]}, "
                               f"but it must end as {value}")
    planned = {(d, f) for d, values in settings.items() for f in values}
    extra: dict[tuple[str, str], Any] = {key: v for key, v in stated.numbers.items() if key not in planned}
    extra |= {key: " / ".join(sorted(map(_spoken, v))) for key, v in stated.strict.items() if key not in planned}
    for (device, name), value in sorted(extra.items()):
        reasons.append(f"{device}.{name}: the user asks for {_spoken(value)}, but this session sets no {device}.{name}")
    return reasons


def _summary_line(session_id: int, meta: Mapping[str, str], settings: Mapping[str, Mapping[str, Any]],
                  messages: Sequence[Message]) -> str:
    """One line about a session for the writer's running summary: context, settings, first words."""
    asked = "; ".join(f"{device} " + ", ".join(_spoken(value) if isinstance(value, bool) else f"{name} {value}"
                                               for name, value in values.items())
                      for device, values in settings.items())
    opening = next((m.text for m in messages if m.role == "user"), "")
    opening = opening if len(opening) <= 60 else opening[:60].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return f"Session {session_id} [{', '.join(meta.values())}]: {asked or 'nothing set'}; began \"{opening}\""


def write_session(writer: Writer, plan: WriterInput, retries: int = DEFAULT_RETRIES,
                  ) -> tuple[tuple[tuple[str, str], ...] | None, dict[str, Any]]:
    """Ask `writer` for the planned session until `check_dialogue` passes, 1 + retries tries at most.

    Returns the dialogue (None if no try passed) and the session's log row: `outcome` "kept"
    or "fallback", `attempts`, `reasons` (why the last try failed; [] when kept) and `tries`
    (per try: its reasons, the writer's `info` and, when rejected, its `raw` text).
    """
    tries: list[dict[str, Any]] = []
    feedback: tuple[str, ...] = ()
    for attempt in range(1, retries + 2):
        out = writer(replace(plan, attempt=attempt, feedback=feedback, seed=(plan.seed + attempt - 1) % 2**31))
        reasons = [out.error] if out.error else check_dialogue(out.messages, plan.settings)
        entry: dict[str, Any] = {"attempt": attempt, "reasons": reasons, **out.info}
        entry.update(attempt=attempt, reasons=reasons)  # whatever the writer's info says
        if reasons:
            entry["raw"] = out.raw
        tries.append(entry)
        if not reasons:
            break
        feedback = tuple(reasons)
    kept = not tries[-1]["reasons"]
    row = {"user": plan.user_index, "session_id": plan.session_id, "routine": plan.routine,
           "writer": getattr(writer, "name", type(writer).__name__),
           "outcome": "kept" if kept else "fallback", "attempts": len(tries),
           "reasons": [] if kept else tries[-1]["reasons"], "tries": tries}
    return (tuple((role, text.strip()) for role, text in out.messages) if kept else None), row


# --- users ------------------------------------------------------------------------------
def _check_style(style: str) -> None:
    if style not in STYLES:
        raise HarnessError(f"Unknown style '{style}'. Available: {', '.join(STYLES)}.")


def _user(index: int, n_sessions: int, seed: int, writer: Writer | None = None, retries: int = DEFAULT_RETRIES,
          log: list[dict[str, Any]] | None = None, progress: Callable[[dict[str, Any]], None] | None = None,
          style: str = DEFAULT_STYLE) -> tuple[User, list[dict[str, Any]]]:
    rng = random.Random(f"edgewise-synth:{seed}:{index}")
    persona = _persona(rng)
    # Natural speech draws from its own streams, so the plan (and so the labels) is the plain style's.
    habits = _habits(random.Random(f"edgewise-synth-natural:{seed}:{index}")) if style == "natural" else None
    triggers = _routine_triggers(rng, _pick(rng, ROUTINES_PER_USER))
    routines = [
        Routine(triggers=Triggers(**t), actions=Actions(**_settings(rng, _routine_fields(rng), t, persona)),
                priority=i + 1)
        for i, t in enumerate(triggers)
    ]
    actions = [r.compact()["actions"] for r in routines]
    n_driven = round(ROUTINE_SHARE * n_sessions)
    # Every routine shows up at least once when there is room, the rest at random.
    drivers = list(range(len(routines)))[:n_driven]
    drivers += [rng.randrange(len(routines)) for _ in range(n_driven - len(drivers))]
    rng.shuffle(drivers)
    driven = dict(zip(sorted(rng.sample(range(n_sessions), n_driven)), drivers))
    sessions, labels = [], []
    summary: list[str] = []  # the writer's running summary: one line per earlier session
    for session_id in range(n_sessions):
        routine = driven.get(session_id)
        if routine is None:
            meta = _sample_context(rng, avoid=triggers)
            settings = _settings(rng, _spontaneous_fields(rng), meta, persona)
        else:
            meta = _sample_context(rng, fixed=triggers[routine], avoid=triggers[:routine] + triggers[routine + 1:])
            settings = actions[routine]
        # Drawn even when a writer writes the session: it keeps the random stream (and so every
        # plan) the same with or without a writer, and it is the fallback.
        messages = _dialogue(rng, persona, meta, settings)
        if habits is not None:
            natural = random.Random(f"edgewise-synth-natural:{seed}:{index}:{session_id}")
            messages = _dialogue(natural, persona, meta, settings, exchanges=len(messages) // 2, habits=habits)
        if writer is not None:
            plan = WriterInput(
                user_index=index, session_id=session_id, character=persona.character, context=dict(meta),
                settings=json.loads(json.dumps(settings)), routine=routine, summary=tuple(summary[-SUMMARY_LINES:]),
                n_messages=len(messages),
                seed=random.Random(f"edgewise-writer:{seed}:{index}:{session_id}").getrandbits(31))
            written, row = write_session(writer, plan, retries)
            if written is not None:
                messages = [Message(role=role, text=text) for role, text in written]
            summary.append(_summary_line(session_id, meta, settings, messages))
            if log is not None:
                log.append(row)
            if progress is not None:
                progress(row)
        sessions.append(Session(session_id=session_id, meta=SessionMeta(**meta), messages=messages,
                                applied_routines=[] if routine is None else [routine]))
        labels.append({"session_id": session_id, "routine": routine, "settings": settings})
    return User(index=index, character=persona.character, routines=routines, sessions=sessions), labels


def generate_sample(n_users: int, n_sessions: int, seed: int, *, writer: Writer | None = None,
                    retries: int = DEFAULT_RETRIES, log: list[dict[str, Any]] | None = None,
                    progress: Callable[[dict[str, Any]], None] | None = None, style: str = DEFAULT_STYLE,
                    ) -> tuple[list[User], list[list[dict[str, Any]]]]:
    """Users plus, per user and session, `{"session_id", "routine", "settings"}` labels.

    `style` is how the template dialogues talk: "natural" (the default) or "plain" (see the
    module's docstring); users, routines, contexts and labels are the same in both.

    `routine` is the index of the routine that drove the session or None; `settings` holds
    the final values the user asked for, as `{device: {field: value}}`.  With a `writer`,
    each dialogue is written by it (see `write_session`; a session it fails keeps its template
    dialogue), one row per session is appended to `log` and handed to `progress`.  Users, routines, contexts and
    labels are the same with or without a writer.
    """
    if n_users < 0 or n_sessions < 0:
        raise HarnessError(f"A sample needs n_users >= 0 and n_sessions >= 0 (got {n_users} and {n_sessions}).")
    if retries < 0:
        raise HarnessError(f"retries={retries} must be 0 or more.")
    _check_style(style)
    pairs = [_user(i, n_sessions, seed, writer, retries, log, progress, style) for i in range(n_users)]
    return [user for user, _ in pairs], [labels for _, labels in pairs]


def generate_users(n_users: int, n_sessions: int, seed: int, style: str = DEFAULT_STYLE) -> list[User]:
    """n_users synthetic users with n_sessions sessions each; the same arguments give the same users."""
    return generate_sample(n_users, n_sessions, seed, style=style)[0]


def write_sample(out_dir: str | os.PathLike[str], n_users: int, n_sessions: int, seed: int, *,
                 writer: Writer | None = None, retries: int = DEFAULT_RETRIES,
                 progress: Callable[[dict[str, Any]], None] | None = None, style: str = DEFAULT_STYLE) -> Path:
    """Write a sample (the three dataset files plus session_labels.jsonl) to out_dir.

    `style`: "natural" (the default) or "plain" speech in the template dialogues (see
    `generate_sample`).

    With a `writer`, also writer_log.jsonl: one row per session (see `write_session`), in
    the order of the sessions; `progress` is called with each row as it is made.

    The files are written to a temporary folder next to out_dir, which then takes its place,
    so an interrupted run never leaves a folder that looks complete.  An existing out_dir is
    replaced only if it holds nothing but these files.
    """
    out = Path(out_dir)
    known = (*OUTPUT_FILES, WRITER_LOG_FILE)
    _check_style(style)
    if out.exists() and (not out.is_dir() or any(p.name not in known for p in out.iterdir())):
        raise HarnessError(f"'{out}' exists and holds other things than a sample; pass a new or empty folder to --out.")
    log: list[dict[str, Any]] = []
    users, labels = generate_sample(n_users, n_sessions, seed, writer=writer, retries=retries, log=log,
                                    progress=progress, style=style)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_folder(users, tmp)
        with (tmp / LABELS_FILE).open("w", encoding="utf-8") as handle:
            for user_labels in labels:
                handle.write(json.dumps({"labels": user_labels}, ensure_ascii=False) + "\n")
        if writer is not None:
            with (tmp / WRITER_LOG_FILE).open("w", encoding="utf-8") as handle:
                for row in log:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; a sample is for everyone to read
        if out.exists():
            old = tmp.with_name(tmp.name + ".old")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
