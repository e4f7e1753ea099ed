"""A deterministic, offline generator of EdgeWisePersona-format samples that read like people.

The paper made its data in two steps, and so does this module: first the structure (a
character sketch, routines, one consistent context per session, the settings asked for),
sampled to match the paper's Table 1; then a dialogue in the user's voice, written from the
phrase tables in `eval.synth_phrases` (many phrasings per setting, indirect requests,
corrections, clarifying questions, small talk, a personality).

Everything is a pure function of (n_users, n_sessions, seed): user i draws from its own
`random.Random` seeded with a string built from seed and i, so a sample with more users
starts with the same users.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import synth_phrases as P
from .dataset import FILES, write_folder
from .errors import HarnessError
from .schema import DEVICE_FIELDS, TRIGGER_FIELDS, Actions, Message, Routine, Session, SessionMeta, Triggers, User

LABELS_FILE = "session_labels.jsonl"
OUTPUT_FILES = (*FILES, LABELS_FILE)

# --- the paper's Table 1, as sampling weights -------------------------------------------
ROUTINES_PER_USER = {3: 0.16, 4: 0.70, 5: 0.14}  # mean 3.98
TRIGGER_DROP = 0.02  # share of routines that leave one trigger field unset: 4.98 triggers
DEVICES_PER_ROUTINE = {2: 0.20, 3: 0.50, 4: 0.29, 5: 0.01}  # mean 3.11
# Three-field devices are picked more often than two-field ones, so that with an
# occasional dropped field a routine sets about 8.24 fields over its 3.11 devices.
DEVICE_WEIGHTS = {"tv": 1.3, "ac": 1.3, "lights": 1.4, "speaker": 0.6, "security": 0.7}
FIELD_DROP = 0.06
ROUTINE_SHARE = 0.75
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

    def free_fields(self) -> list[str]:
        """Fields still free to correct or to ask for; never "armed" ("disarm... no, arm" reads oddly)."""
        taken = {self.ask, *(c[0] for c in (self.inline, self.later) if c)}
        return [f for f in self.values if f != "armed" and f not in taken]


class _Writer:
    """Writes one session's dialogue for a persona, a context and the settings to ask for."""

    def __init__(self, rng: random.Random, persona: _Persona, meta: Mapping[str, str]) -> None:
        self.rng, self.persona, self.meta = rng, persona, meta
        day = rng.choice(P.DAY_WORDS[meta["day_of_week"]])
        weather = P.WEATHER_WORDS[meta["weather"]]
        self.slots = {"period": meta["time_of_day"], "day": day, "weather": weather, "Weather": _cap(weather),
                      "temp": P.TEMP_WORDS[meta["outdoor_temp"]]}
        self.remarked = False  # the assistant mentions the weather at most once a session

    def _say(self, device: str, field: str, value: Any) -> str:
        words = P.VALUE_WORDS.get((device, field))
        return self.rng.choice(words[value]) if words else str(value)

    def _spoken(self, chunk: _Chunk, field: str) -> str:
        final = self._say(chunk.device, field, chunk.values[field])
        if chunk.inline and chunk.inline[0] == field:
            wrong = chunk.inline[1]
            kind = "category" if isinstance(wrong, str) else "number"
            template = _choose(self.rng, P.INLINE_CORRECTIONS[kind], {"v": chunk.values[field], "w": wrong})
            return template.format(v=final, w=self._say(chunk.device, field, wrong))
        if chunk.later and chunk.later[0] == field:
            return self._say(chunk.device, field, chunk.later[1])
        return final

    @staticmethod
    def _said(chunk: _Chunk) -> dict[str, Any]:
        """What the user says in the chunk's own turn (the wrong value of a later correction)."""
        said = {f: v for f, v in chunk.values.items() if f != chunk.ask}
        if chunk.later:
            said[chunk.later[0]] = chunk.later[1]
        return said

    def request(self, chunk: _Chunk) -> str:
        """An imperative phrase asking for the chunk's values, e.g. "set the TV volume to 30"."""
        rng, device = self.rng, chunk.device
        said = self._said(chunk)
        # A field left for the assistant to ask about is still hinted at ("... and switch the TV input").
        vague = [rng.choice(P.CLARIFY[(device, chunk.ask)][0])] if chunk.ask else []
        if not said:
            return vague[0]
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
        user = " ".join(filter(None, [prefix, first, *rest]))
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
        exchanges.append((user, reply))
        return exchanges

    def correction(self, chunk: _Chunk) -> tuple[str, str]:
        field, wrong = chunk.later
        final = chunk.values[field]
        kind = "category" if isinstance(final, str) else "number"
        template = _choose(self.rng, P.LATER_CORRECTIONS[kind], {"v": final, "w": wrong})
        user = _cap(template.format(f=self.rng.choice(P.FIELD_NAMES[(chunk.device, field)]),
                                    v=self._say(chunk.device, field, final), w=self._say(chunk.device, field, wrong)))
        return user, self.confirm({chunk.device: {field: final}})

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
        user = self.rng.choice(self.persona.style["thanks"])
        reply = _choose(self.rng, P.ASSISTANT_CLOSERS, self.meta).format(**self.slots)
        return user, reply


def _plan(rng: random.Random, persona: _Persona, settings: Mapping[str, Mapping[str, Any]],
          target: int) -> tuple[list[list[_Chunk]], list[str]]:
    """Group the settings into turns and choose the extra exchanges, `target` exchanges in all."""
    chunks = []
    for device, values in settings.items():
        fields = list(values)
        if len(fields) == 3 and rng.random() < 0.3:
            alone = rng.choice(fields)
            chunks.append(_Chunk(device, {alone: values[alone]}))
            fields.remove(alone)
        chunks.append(_Chunk(device, {f: values[f] for f in fields}))
    rng.shuffle(chunks)
    rate = persona.style["corrections"]
    for chunk in chunks:
        draw = rng.random()
        if draw < 0.15 * rate and chunk.free_fields():
            field = rng.choice(chunk.free_fields())
            chunk.inline = (field, _wrong(rng, chunk.device, field, chunk.values[field]))
        elif draw < 0.25 * rate and chunk.free_fields():
            field = rng.choice(chunk.free_fields())
            chunk.later = (field, _wrong(rng, chunk.device, field, chunk.values[field]))
        if rng.random() < 0.12 and chunk.free_fields():
            chunk.ask = rng.choice(chunk.free_fields())
    turns = [[c] for c in chunks]
    extras = [name for name, p in (("opener", 0.4), ("weather", 0.15), ("chat", 0.3 * persona.style["chat"]),
                                   ("closer", 0.55)) if rng.random() < p]

    def count() -> int:
        return len(turns) + len(extras) + sum(bool(c.ask) + bool(c.later) for c in chunks)

    # Fit to the target length by adding or removing whatever is there to add or remove;
    # corrections are added rarely (weight 1), so that they stay the person's habit, not padding.
    while count() != target:
        options: list[tuple[str, Any, float]] = []
        if count() > target:
            options += [("drop extra", e, 1.0) for e in extras]
            options += [("drop later", c, 1.0) for c in chunks if c.later]
            options += [("drop ask", c, 1.0) for c in chunks if c.ask]
            options += [("merge", i, 1.0) for i in range(len(turns) - 1)]
        else:
            options += [("extra", e, 4.0) for e in ("opener", "weather", "closer") if e not in extras]
            if extras.count("chat") < len(persona.remarks) - 1:  # one is kept for the first turn
                options.append(("extra", "chat", 4.0 * persona.style["chat"]))
            options += [("ask", c, 1.5) for c in chunks if not c.ask and c.free_fields()]
            options += [("later", c, 2.0 * persona.style["corrections"]) for c in chunks
                        if not (c.later or c.inline) and c.free_fields()]
            options += [("split", i, 3.0) for i, t in enumerate(turns) if len(t) > 1]
        if not options:
            break
        action, item, _ = rng.choices(options, [weight for *_, weight in options])[0]
        if action == "drop extra":
            extras.remove(item)
        elif action == "drop later":
            item.later = None
        elif action == "drop ask":
            item.ask = None
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
              settings: Mapping[str, Mapping[str, Any]]) -> list[Message]:
    turns, extras = _plan(rng, persona, settings, _pick(rng, EXCHANGES_PER_SESSION))
    writer = _Writer(rng, persona, meta)
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
    for extra in extras:
        if extra in ("weather", "chat"):
            block = [writer.weather()] if extra == "weather" else [writer.chat(remarks.pop(0))]
            blocks.insert(rng.randint(1 if prefix else 0, len(blocks)), block)
    if "opener" in extras:
        blocks.insert(0, [writer.opener()])
    if "closer" in extras:
        blocks.append([writer.closer()])
    messages = []
    for user, reply in (exchange for block in blocks for exchange in block):
        messages += [Message(role="user", text=user), Message(role="assistant", text=reply)]
    return messages


# --- users ------------------------------------------------------------------------------
def _user(index: int, n_sessions: int, seed: int) -> tuple[User, list[dict[str, Any]]]:
    rng = random.Random(f"edgewise-synth:{seed}:{index}")
    persona = _persona(rng)
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
    for session_id in range(n_sessions):
        routine = driven.get(session_id)
        if routine is None:
            meta = _sample_context(rng, avoid=triggers)
            settings = _settings(rng, _spontaneous_fields(rng), meta, persona)
        else:
            meta = _sample_context(rng, fixed=triggers[routine], avoid=triggers[:routine] + triggers[routine + 1:])
            settings = actions[routine]
        sessions.append(Session(session_id=session_id, meta=SessionMeta(**meta),
                                messages=_dialogue(rng, persona, meta, settings),
                                applied_routines=[] if routine is None else [routine]))
        labels.append({"session_id": session_id, "routine": routine, "settings": settings})
    return User(index=index, character=persona.character, routines=routines, sessions=sessions), labels


def generate_sample(n_users: int, n_sessions: int, seed: int) -> tuple[list[User], list[list[dict[str, Any]]]]:
    """Users plus, per user and session, `{"session_id", "routine", "settings"}` labels.

    `routine` is the index of the routine that drove the session or None; `settings` holds
    the final values the user asked for, as `{device: {field: value}}`.
    """
    if n_users < 0 or n_sessions < 0:
        raise HarnessError(f"A sample needs n_users >= 0 and n_sessions >= 0 (got {n_users} and {n_sessions}).")
    pairs = [_user(i, n_sessions, seed) for i in range(n_users)]
    return [user for user, _ in pairs], [labels for _, labels in pairs]


def generate_users(n_users: int, n_sessions: int, seed: int) -> list[User]:
    """n_users synthetic users with n_sessions sessions each; the same arguments give the same users."""
    return generate_sample(n_users, n_sessions, seed)[0]


def write_sample(out_dir: str | os.PathLike[str], n_users: int, n_sessions: int, seed: int) -> Path:
    """Write a sample (the three dataset files plus session_labels.jsonl) to out_dir.

    The files are written to a temporary folder next to out_dir, which then takes its place,
    so an interrupted run never leaves a folder that looks complete.  An existing out_dir is
    replaced only if it holds nothing but these files.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(p.name not in OUTPUT_FILES for p in out.iterdir())):
        raise HarnessError(f"'{out}' exists and holds other things than a sample; pass a new or empty folder to --out.")
    users, labels = generate_sample(n_users, n_sessions, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_folder(users, tmp)
        with (tmp / LABELS_FILE).open("w", encoding="utf-8") as handle:
            for user_labels in labels:
                handle.write(json.dumps({"labels": user_labels}, ensure_ascii=False) + "\n")
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


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """`python -m eval synth --users N --sessions M --seed S --out DIR`: write a sample folder."""
    parser = argparse.ArgumentParser(
        prog="python -m eval synth",
        description="Write a synthetic EdgeWisePersona sample (characters, routines, sessions, session labels).",
    )
    parser.add_argument("--users", type=_count, default=8, help="number of users (default 8)")
    parser.add_argument("--sessions", type=_count, default=40, help="sessions per user (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument("--out", default="data/sample", help="folder to write (default data/sample)")
    args = parser.parse_args(argv)
    try:
        path = write_sample(args.out, args.users, args.sessions, args.seed)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {args.users} users x {args.sessions} sessions (seed {args.seed}) to {path}: "
          f"{', '.join(OUTPUT_FILES)}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
