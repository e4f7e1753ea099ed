"""The EdgeWisePersona data types, exactly as the paper's appendix defines them.

Every other part of the project speaks these types: the dataset loader produces them,
the parser turns model text into them, the scorer compares them.  Value sets are closed
enums; the only numeric bounds are the paper's own (AC temperature 16-30, fan speed 0-3).
The other integers (volumes, brightness) are plain ints in the paper; the decoding schema
below bounds them to 0-100, the range the authors' generator samples from.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TimeOfDay(StrEnum):
    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"
    NIGHT = "night"


class DayOfWeek(StrEnum):
    WEEKDAY = "weekday"
    WEEKEND = "weekend"


class SunPhase(StrEnum):
    BEFORE_SUNRISE = "before_sunrise"
    DAYLIGHT = "daylight"
    AFTER_SUNSET = "after_sunset"


class Weather(StrEnum):
    SUNNY = "sunny"
    CLOUDY = "cloudy"
    RAINY = "rainy"
    SNOWY = "snowy"


class OutdoorTemp(StrEnum):
    VERY_COLD = "very cold"
    COLD = "cold"
    MILD = "mild"
    WARM = "warm"
    HOT = "hot"


class InputSource(StrEnum):
    HDMI1 = "HDMI1"
    HDMI2 = "HDMI2"
    AV = "AV"
    NETFLIX = "Netflix"
    YOUTUBE = "YouTube"


class AcMode(StrEnum):
    COOL = "cool"
    HEAT = "heat"
    AUTO = "auto"


class LightColor(StrEnum):
    WARM = "warm"
    COOL = "cool"
    NEUTRAL = "neutral"


class LightMode(StrEnum):
    STATIC = "static"
    DYNAMIC = "dynamic"


class Equalizer(StrEnum):
    BASS_BOOST = "bass boost"
    BALANCED = "balanced"
    TREBLE_BOOST = "treble boost"


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a field name must not pass silently as "unset".
    model_config = ConfigDict(extra="forbid", frozen=True)


class Triggers(_Strict):
    time_of_day: TimeOfDay | None = None
    day_of_week: DayOfWeek | None = None
    sun_phase: SunPhase | None = None
    weather: Weather | None = None
    outdoor_temp: OutdoorTemp | None = None


class TV(_Strict):
    volume: int | None = None
    brightness: int | None = None
    input_source: InputSource | None = None


class AC(_Strict):
    temperature: int | None = Field(default=None, ge=16, le=30)
    mode: AcMode | None = None
    fan_speed: int | None = Field(default=None, ge=0, le=3)


class Lights(_Strict):
    brightness: int | None = None
    color: LightColor | None = None
    mode: LightMode | None = None


class Speaker(_Strict):
    volume: int | None = None
    equalizer: Equalizer | None = None


class Security(_Strict):
    armed: bool | None = None
    alarm_volume: int | None = None


class Actions(_Strict):
    tv: TV | None = None
    ac: AC | None = None
    lights: Lights | None = None
    speaker: Speaker | None = None
    security: Security | None = None


class Routine(_Strict):
    triggers: Triggers = Field(default_factory=Triggers)
    actions: Actions = Field(default_factory=Actions)
    # Ranking in the user's profile; ignored by the scorer, as in the authors' notebook.
    priority: int | None = None

    def compact(self) -> dict[str, Any]:
        """The routine as plain JSON without unset fields, empty devices or priority."""
        return compact(self.model_dump(mode="json", exclude={"priority"}))


class SessionMeta(_Strict):
    time_of_day: TimeOfDay
    day_of_week: DayOfWeek
    sun_phase: SunPhase
    weather: Weather
    outdoor_temp: OutdoorTemp

    def as_triggers(self) -> Triggers:
        return Triggers(**self.model_dump())


class Message(_Strict):
    role: Role
    text: str


class Session(_Strict):
    session_id: int
    meta: SessionMeta
    messages: list[Message]
    # Indices into the user's routines that drove this session ([] = spontaneous).
    applied_routines: list[int] | None = None
    # Present in some releases of the dataset; carried through, never shown to models.
    session_summarization: str | None = None


class User(_Strict):
    index: int
    character: str
    routines: list[Routine]
    sessions: list[Session]


DEVICE_MODELS: dict[str, type[_Strict]] = {
    "tv": TV, "ac": AC, "lights": Lights, "speaker": Speaker, "security": Security,
}
# Device -> its fields, in schema order; shared by the scorer, the parser and the prompts.
DEVICE_FIELDS: dict[str, tuple[str, ...]] = {
    name: tuple(model.model_fields) for name, model in DEVICE_MODELS.items()
}
TRIGGER_FIELDS: tuple[str, ...] = tuple(Triggers.model_fields)
# The numeric action fields the paper scores with MAE, and the closed-set ones it scores
# with accuracy (Tables 2 and 3).
NUMERIC_FIELDS: tuple[tuple[str, str], ...] = (
    ("tv", "volume"),
    ("tv", "brightness"),
    ("ac", "temperature"),
    ("lights", "brightness"),
    ("speaker", "volume"),
    ("security", "alarm_volume"),
)
CATEGORICAL_ACTION_FIELDS: tuple[tuple[str, str], ...] = (
    ("tv", "input_source"),
    ("ac", "mode"),
    ("ac", "fan_speed"),
    ("lights", "color"),
    ("lights", "mode"),
    ("speaker", "equalizer"),
    ("security", "armed"),
)


def compact(value: Any) -> Any:
    """Drop nulls, then empty objects, recursively: both mean "unspecified" in the benchmark."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = compact(item)
            if item is None or (isinstance(item, dict) and not item):
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [compact(item) for item in value]
    return value


# --- JSON schema for constrained decoding -------------------------------------------------
#
# Built by hand rather than from pydantic's model_json_schema() for three reasons that the
# grammar converters impose: no $ref/$defs (llama.cpp's converter mishandles nested refs),
# integers as enums (llama-cpp-python's converter ignores minimum/maximum, so a bound must be
# spelled as the list of allowed values), and a bounded routine count (an unbounded array lets
# greedy decoding repeat until max_tokens).

PERCENT_RANGE = (0, 100)


def _int_enum(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "integer", "enum": list(range(lo, hi + 1))}


def _str_enum(enum: type[StrEnum]) -> dict[str, Any]:
    return {"type": "string", "enum": [member.value for member in enum]}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def _device_schemas() -> dict[str, dict[str, Any]]:
    pct = _int_enum(*PERCENT_RANGE)
    return {
        "tv": {"volume": pct, "brightness": pct, "input_source": _str_enum(InputSource)},
        "ac": {"temperature": _int_enum(16, 30), "mode": _str_enum(AcMode), "fan_speed": _int_enum(0, 3)},
        "lights": {"brightness": pct, "color": _str_enum(LightColor), "mode": _str_enum(LightMode)},
        "speaker": {"volume": pct, "equalizer": _str_enum(Equalizer)},
        "security": {"armed": {"type": "boolean"}, "alarm_volume": pct},
    }


def triggers_json_schema() -> dict[str, Any]:
    return _object(
        {
            "time_of_day": _str_enum(TimeOfDay),
            "day_of_week": _str_enum(DayOfWeek),
            "sun_phase": _str_enum(SunPhase),
            "weather": _str_enum(Weather),
            "outdoor_temp": _str_enum(OutdoorTemp),
        }
    )


def actions_json_schema() -> dict[str, Any]:
    return _object({device: _object(fields) for device, fields in _device_schemas().items()})


def routine_json_schema() -> dict[str, Any]:
    return _object(
        {"triggers": triggers_json_schema(), "actions": actions_json_schema()},
        required=["triggers", "actions"],
    )


def routines_json_schema(max_routines: int, min_routines: int = 0) -> dict[str, Any]:
    """`{"routines": [...]}` with between min_routines and max_routines routines, no $refs."""
    if max_routines < min_routines or max_routines < 0:
        raise ValueError(f"max_routines={max_routines} must be >= min_routines={min_routines} >= 0")
    return _object(
        {
            "routines": {
                "type": "array",
                "items": routine_json_schema(),
                "minItems": min_routines,
                "maxItems": max_routines,
            }
        },
        required=["routines"],
    )
