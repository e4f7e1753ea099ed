"""The incremental strategy's profile: deterministic aggregation of per-session settings.

Sessions are grouped by their context (all five trigger fields); groups are ranked by
support (how many sessions fell in that context; ties: the context seen first); the top N
become routines whose triggers are the context and whose actions hold, per field, the
majority value among the group's sessions (ties: the value seen first), for the fields set
in more than half of the group's sessions.  The state is plain JSON, so a profile can be saved
and updated as sessions arrive, one session's worth of work at a time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from eval.schema import Routine, SessionMeta, compact


@dataclass
class ProfileAggregator:
    # context key ("morning|weekday|...") -> settings seen in each session in that context
    groups: dict[str, list[dict[str, dict[str, Any]]]] = field(default_factory=dict)
    # context key -> the context itself, in order of first appearance
    contexts: dict[str, dict[str, str]] = field(default_factory=dict)

    def update(self, meta: SessionMeta, settings: dict[str, dict[str, Any]]) -> None:
        """Add one session's extracted settings (device -> field -> value)."""
        context = meta.model_dump(mode="json")
        key = "|".join(context.values())
        self.contexts.setdefault(key, context)
        self.groups.setdefault(key, []).append(compact(settings))

    def profile(self, n_routines: int) -> list[Routine]:
        """The current top-N routines."""
        order = list(self.contexts)
        ranked = sorted(order, key=lambda k: (-len(self.groups[k]), order.index(k)))
        routines = []
        for key in ranked[:n_routines]:
            sessions = self.groups[key]
            counts: dict[tuple[str, str], Counter[Any]] = {}
            for settings in sessions:
                for device, fields in settings.items():
                    for name, value in fields.items():
                        counts.setdefault((device, name), Counter())[_freeze(value)] += 1
            actions: dict[str, dict[str, Any]] = {}
            for (device, name), counter in counts.items():
                if 2 * sum(counter.values()) > len(sessions):
                    actions.setdefault(device, {})[name] = counter.most_common(1)[0][0]
            routines.append(Routine.model_validate({"triggers": self.contexts[key], "actions": actions}))
        return routines

    def to_json(self) -> dict[str, Any]:
        return {"groups": self.groups, "contexts": self.contexts}

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> ProfileAggregator:
        return cls(groups={k: list(v) for k, v in state["groups"].items()}, contexts=dict(state["contexts"]))


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
