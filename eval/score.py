"""The paper's scoring protocol, as the authors' evaluation notebook computes it.

Per user: predictions beyond the number of ground-truth routines are cut (the first N in
the model's order are kept; an item that is not a routine, e.g. one the schema refused, keeps
its slot and matches nothing); each ground-truth routine is paired with the FIRST prediction
of maximal flattened Jaccard (a prediction may serve several ground truths); a user with no
predictions contributes zeros.  Nulls and empty device blocks mean "unspecified" and are
removed from both sides first; `priority` is ignored.  A boolean never equals a number
(`armed: 1` is not `armed: true`).

Totals run over all ground-truth routines of all users:
- `acc.routine_exact`, `acc.triggers_exact`, `acc.actions_exact`: exact matches / #truth;
- `jaccard.flattened`: mean Jaccard of the flattened (key path, value) sets;
- `len_diff.avg`: mean over users of |#truth - #predictions after the cut| (bad items count);
- `acc.triggers.<field>`, `acc.actions.<device>.<field>`: over matched ground-truth routines
  where the field is set (as in the notebook, a routine with no prediction does not count);
- `mae.<device>.<field>`: over matched pairs where both values are numbers (not booleans).
A metric with no cases is None (so with no ground-truth routine at all, every accuracy and the
Jaccard are None, not 0).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .schema import CATEGORICAL_ACTION_FIELDS, NUMERIC_FIELDS, TRIGGER_FIELDS, Routine, compact

SCORER_VERSION = ("edgewise-score/1.1 (notebook protocol; cut to N, a bad item keeps its slot; first best Jaccard; "
                  "booleans are not numbers)")

GLOBAL_METRICS = (
    "acc.routine_exact",
    "acc.triggers_exact",
    "acc.actions_exact",
    "jaccard.flattened",
    "len_diff.avg",
)
CATEGORICAL_METRICS = tuple(f"acc.triggers.{f}" for f in TRIGGER_FIELDS) + tuple(
    f"acc.actions.{d}.{f}" for d, f in CATEGORICAL_ACTION_FIELDS
)
MAE_METRICS = tuple(f"mae.{d}.{f}" for d, f in NUMERIC_FIELDS)
ALL_METRICS = GLOBAL_METRICS + CATEGORICAL_METRICS + MAE_METRICS

_CATEGORICAL_PATHS = tuple(("triggers", f) for f in TRIGGER_FIELDS) + tuple(
    ("actions", d, f) for d, f in CATEGORICAL_ACTION_FIELDS
)


@dataclass(frozen=True)
class ScoreReport:
    metrics: dict[str, float | None]
    n_users: int
    n_truth_routines: int
    n_predicted_routines: int  # after the cut
    version: str = SCORER_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "n_users": self.n_users,
            "n_truth_routines": self.n_truth_routines,
            "n_predicted_routines": self.n_predicted_routines,
            "scorer_version": self.version,
        }


def normalise(routine: Routine | Mapping[str, Any]) -> dict[str, Any]:
    """A routine as plain JSON: nulls, empty device blocks and `priority` removed."""
    if isinstance(routine, Routine):
        return routine.compact()
    return compact({k: v for k, v in routine.items() if k != "priority"})


def _hashable(value: Any) -> Any:
    if isinstance(value, bool):  # True == 1 and hash(True) == hash(1): tag booleans apart
        return (bool, value)
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def flatten(routine: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> frozenset[tuple[tuple[str, ...], Any]]:
    """{(key path, leaf value)}; lists become tuples."""
    items: set[tuple[tuple[str, ...], Any]] = set()
    for key, value in routine.items():
        path = prefix + (key,)
        if isinstance(value, Mapping):
            items |= flatten(value, path)
        else:
            items.add((path, _hashable(value)))
    return frozenset(items)


def jaccard(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    sa, sb = flatten(a), flatten(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else 1.0


def _dig(routine: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = routine
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _same(a: Any, b: Any) -> bool:
    """Equal leaves, a boolean never equal to a number."""
    return _hashable(a) == _hashable(b)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def score(
    truth: Sequence[Sequence[Routine | Mapping[str, Any]]],
    predictions: Sequence[Sequence[Routine | Mapping[str, Any] | Any]],
) -> ScoreReport:
    """Score aligned per-user lists of ground-truth and predicted routines.  A prediction that is
    not a Routine or a mapping (None for one the schema refused) keeps its place in the model's
    order and matches nothing."""
    if len(truth) != len(predictions):
        raise ValueError(f"truth has {len(truth)} users but predictions has {len(predictions)}")
    n_truth = n_pred = 0
    exact = exact_triggers = exact_actions = 0
    jaccard_sum = 0.0
    len_diff_sum = 0
    cat_total = {p: 0 for p in _CATEGORICAL_PATHS}
    cat_equal = {p: 0 for p in _CATEGORICAL_PATHS}
    abs_errors: dict[tuple[str, str], list[float]] = {f: [] for f in NUMERIC_FIELDS}

    for user_truth, user_preds in zip(truth, predictions):
        gts = [normalise(r) for r in user_truth]
        kept = list(user_preds)[: len(gts)]  # the first N of what the model output, bad items included
        preds = [normalise(r) for r in kept if isinstance(r, (Routine, Mapping))]
        n_truth += len(gts)
        n_pred += len(kept)
        len_diff_sum += abs(len(gts) - len(kept))
        for gt in gts:
            if not preds:
                continue
            scores = [jaccard(gt, p) for p in preds]
            best = preds[scores.index(max(scores))]  # first of the maximal ones
            jaccard_sum += max(scores)
            same_triggers = _same_block(gt, best, "triggers")
            same_actions = _same_block(gt, best, "actions")
            exact += same_triggers and same_actions
            exact_triggers += same_triggers
            exact_actions += same_actions
            for path in _CATEGORICAL_PATHS:
                expected = _dig(gt, path)
                if expected is not None:
                    cat_total[path] += 1
                    cat_equal[path] += _same(expected, _dig(best, path))
            for device, field in NUMERIC_FIELDS:
                g, p = _dig(gt, ("actions", device, field)), _dig(best, ("actions", device, field))
                if _is_number(g) and _is_number(p):
                    abs_errors[(device, field)].append(abs(g - p))

    def over_truth(count: float) -> float | None:
        return count / n_truth if n_truth else None  # no ground-truth routine: nothing to score

    metrics: dict[str, float | None] = {
        "acc.routine_exact": over_truth(exact),
        "acc.triggers_exact": over_truth(exact_triggers),
        "acc.actions_exact": over_truth(exact_actions),
        "jaccard.flattened": over_truth(jaccard_sum),
        "len_diff.avg": len_diff_sum / len(truth) if truth else None,
    }
    for path in _CATEGORICAL_PATHS:
        metrics["acc." + ".".join(path)] = cat_equal[path] / cat_total[path] if cat_total[path] else None
    for (device, field), errors in abs_errors.items():
        metrics[f"mae.{device}.{field}"] = sum(errors) / len(errors) if errors else None
    return ScoreReport(metrics=metrics, n_users=len(truth), n_truth_routines=n_truth, n_predicted_routines=n_pred)


def _same_block(gt: Mapping[str, Any], pred: Mapping[str, Any], key: str) -> bool:
    a, b = gt.get(key, {}), pred.get(key, {})
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return flatten(a) == flatten(b)
    return _same(a, b)


def mean_of(metrics: Mapping[str, float | None], names: Sequence[str]) -> float | None:
    """Mean of the named metrics that are not None (the paper's "avg" columns)."""
    values = [metrics[n] for n in names if metrics.get(n) is not None]
    return sum(values) / len(values) if values else None  # type: ignore[arg-type]
