"""The model gate ("blessing"): whether a candidate's evaluation report earns it the ``champion`` alias.

Pure Python, no MLflow: the caller reads the champion's version tags and the candidate's report and acts on
the returned :class:`Decision`, so the policy can be tested (and explained) without a tracking server.

Policy, given a :class:`GateRule`:

* **Minimum.** The report's ``average`` (the unweighted mean of benchmark accuracies, as
  :func:`crnn.evaluate.report.summarise` writes it, 0-1) must be at least ``min_average``.
* **No regression.** Each benchmark the champion was evaluated on must not be more than ``max_drop_points``
  percentage points below the champion's accuracy on it. Gains are always fine.
* **New benchmarks** (in the candidate's report, not in the champion's tags) pass, reported as
  "new, no comparison": there is nothing to regress from, and refusing them would block adding benchmarks.
* **Missing benchmarks** (the champion had them, the candidate's report lacks them) fail as "not evaluated":
  otherwise dropping a benchmark from the evaluation would be a way around the regression check.
* **Other data** (the candidate's benchmark data and the champion's differ: both carry the digest of what the
  converted split holds, ``data_sha256`` (:func:`crnn.data.shards.data_sha256`: its inputs' checksums, the
  model input, charset and label policy, the counts; not the shard size or where the inputs were fetched
  from), and the digests differ) fail as "evaluated on other data":
  accuracies on two datasets say nothing about which model is better, and a synthetic stand-in scoring 99 %
  must not displace a model measured on the real benchmark. A new data version is adopted deliberately, by
  moving the alias by hand. When either side has no digest (a version registered before they were recorded),
  the figures are compared.
* **No champion yet** (``champion=None``): only the minimum applies. An empty mapping is different: a champion
  without accuracy tags, so every benchmark is new.

Comparisons are made in percentage points with a tolerance of :data:`EPSILON_POINTS`, so that a drop of
exactly ``max_drop_points`` (or an average of exactly ``min_average``) passes although ``0.80 - 0.79`` is not
exactly ``0.01`` in binary floating point. The tolerance is far below the resolution of the champion's figures,
which :func:`crnn.registry.register.register_model` stores rounded to 4 decimals (0.01 points).

A non-finite candidate figure (NaN) fails every check it takes part in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

AVERAGE = "average"  # the name of the minimum check; also the champion's ``accuracy/average`` tag, not a benchmark
EPSILON_POINTS = 1e-6  # tolerance of every comparison, in percentage points (see the module docstring)
ACCURACY_TAG_PREFIX = "accuracy/"
# The pipeline's, the register component's and ``crnn register``'s thresholds unless told otherwise. The minimum
# is about the references' level on the real benchmarks (docs/training.md): one above it would refuse every model
# of the paper's recipe.
DEFAULT_MIN_AVERAGE, DEFAULT_MAX_DROP_POINTS = 0.8, 1.0
DATA_TAG_PREFIX = "data.sha256/"  # a version's benchmark data: ``data_sha256`` of its converted split

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")  # MLflow tag and metric keys: letters, digits, _ - . / and spaces


@dataclass(frozen=True)
class GateRule:
    """The thresholds: ``min_average`` as a fraction (0-1), ``max_drop_points`` in percentage points."""

    min_average: float = 0.0  # the policy alone: no minimum; the product's default is DEFAULT_MIN_AVERAGE
    max_drop_points: float = DEFAULT_MAX_DROP_POINTS

    def __post_init__(self) -> None:
        # Written as "not in range" so that NaN is refused too.
        if not 0.0 <= self.min_average <= 1.0:
            raise ValueError(f"min_average must be a fraction in [0, 1], got {self.min_average!r}")
        if not self.max_drop_points >= 0.0:
            raise ValueError(f"max_drop_points must be >= 0 percentage points, got {self.max_drop_points!r}")


@dataclass(frozen=True)
class Check:
    """One gate check: ``"average"`` against the minimum, or a benchmark against the champion.

    ``candidate`` and ``reference`` (the minimum or the champion's figure) are fractions (0-1), ``None`` where
    there is none (a missing or new benchmark).
    """

    name: str
    passed: bool
    candidate: float | None
    reference: float | None
    reason: str


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, with every check so that a rejection can say why."""

    promote: bool
    checks: tuple[Check, ...]
    champion_version: str | None = None

    def reasons(self) -> list[str]:
        """Why the candidate was rejected: the failed checks' reasons (empty when promoted)."""
        return [check.reason for check in self.checks if not check.passed]

    def as_tags(self) -> dict[str, str]:
        """Tags for the candidate's model version or run, so the verdict is visible in the MLflow UI."""
        tags = {f"gate.{_safe_key(check.name)}": "pass" if check.passed else f"fail: {check.reason}"
                for check in self.checks}
        # Last, so that a benchmark oddly named "decision" cannot hide the verdict.
        tags["gate.decision"] = "promoted" if self.promote else "rejected"
        if self.champion_version is not None:
            tags["gate.champion_version"] = self.champion_version
        return tags

    def as_metrics(self) -> dict[str, float]:
        """Metrics for the run: ``gate.promoted`` (1/0) and each compared benchmark's change in points."""
        metrics = {"gate.promoted": 1.0 if self.promote else 0.0}
        for check in self.checks:
            if check.name != AVERAGE and check.candidate is not None and check.reference is not None:
                metrics[f"gate.delta/{_safe_key(check.name)}"] = _points(check.candidate) - _points(check.reference)
        return metrics

    def format_table(self) -> str:
        """A plain-text table for logs, one line per check, then the verdict."""
        width = max([len("check")] + [len(check.name) for check in self.checks])
        lines = [f"{'check':<{width}} {'candidate %':>11} {'reference %':>11} {'result':<6} reason"]
        for check in self.checks:
            lines.append(f"{check.name:<{width}} {_percent(check.candidate):>11} {_percent(check.reference):>11} "
                         f"{'pass' if check.passed else 'FAIL':<6} {check.reason}")
        champion = f"champion version {self.champion_version}" if self.champion_version else "no champion version"
        lines.append(f"decision: {'promoted' if self.promote else 'rejected'} ({champion})")
        return "\n".join(lines) + "\n"


def decide(report: Mapping[str, Any], rule: GateRule, champion: Mapping[str, float] | None,
           champion_version: str | None = None, champion_data: Mapping[str, str] | None = None) -> Decision:
    """Applies ``rule`` to an evaluation ``report`` against the ``champion``'s accuracies (name -> 0-1).

    ``report`` is :func:`crnn.evaluate.report.summarise`'s output. ``champion=None`` means there is no champion
    yet. The champion's ``average`` entry, if any, is not a benchmark and is ignored. ``champion_data``: the
    data digest of each benchmark the champion was evaluated on (:func:`champion_data_digests`).
    """
    checks = [_minimum_check(float(report[AVERAGE]), rule)]
    if champion is not None:
        benchmarks: Mapping[str, Mapping[str, Any]] = report["benchmarks"]
        reference = {name: value for name, value in champion.items() if name != AVERAGE}
        data = champion_data or {}
        checks += [_other_data_check(name, float(entry["accuracy"]), entry.get("data_sha256"), data.get(name),
                                     reference.get(name))
                   or _benchmark_check(name, float(entry["accuracy"]), reference.get(name), rule)
                   for name, entry in benchmarks.items()]
        checks += [_missing_check(name, value) for name, value in reference.items() if name not in benchmarks]
    return Decision(promote=all(check.passed for check in checks), checks=tuple(checks),
                    champion_version=champion_version)


def champion_accuracies(tags: Mapping[str, str], prefix: str = ACCURACY_TAG_PREFIX) -> dict[str, float]:
    """Reads a model version's ``<prefix><benchmark>`` tags (fractions 0-1, as ``register_model`` writes them).

    Other tags and the ``average`` summary are ignored. A value that is not a finite number in [0, 1] raises
    ValueError naming the tag: a corrupt champion record must stop the gate, not silently weaken it.
    """
    accuracies = {}
    for key, value in tags.items():
        name = key[len(prefix):]
        if not key.startswith(prefix) or not name or name == AVERAGE:
            continue
        accuracies[name] = _parse_accuracy(key, value)
    return accuracies


def champion_data_digests(tags: Mapping[str, str]) -> dict[str, str]:
    """Reads a model version's ``data.sha256/<benchmark>`` tags (as ``register_model`` writes them)."""
    return {key[len(DATA_TAG_PREFIX):]: value for key, value in tags.items()
            if key.startswith(DATA_TAG_PREFIX) and len(key) > len(DATA_TAG_PREFIX)}


def _parse_accuracy(key: str, value: str) -> float:
    try:
        accuracy = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"tag {key!r}: {value!r} is not a number") from None
    if not 0.0 <= accuracy <= 1.0:  # also refuses NaN; a percentage (78.0) lands here
        raise ValueError(f"tag {key!r}: {value!r} is not an accuracy in [0, 1]")
    return accuracy


def _minimum_check(average: float, rule: GateRule) -> Check:
    candidate, bound = _points(average), _points(rule.min_average)
    if candidate >= bound - EPSILON_POINTS:
        reason = f"{AVERAGE}: {candidate:.2f} % meets the minimum {bound:.2f} %"
        return Check(AVERAGE, True, average, rule.min_average, reason)
    reason = f"{AVERAGE}: {candidate:.2f} % is below the minimum {bound:.2f} %"
    return Check(AVERAGE, False, average, rule.min_average, reason)


def _benchmark_check(name: str, accuracy: float, champion: float | None, rule: GateRule) -> Check:
    if champion is None:
        return Check(name, True, accuracy, None, f"{name}: {_points(accuracy):.2f} %, new, no comparison")
    candidate, reference = _points(accuracy), _points(champion)
    drop = reference - candidate
    if drop <= rule.max_drop_points + EPSILON_POINTS:
        reason = (f"{name}: {candidate:.2f} % vs the champion's {reference:.2f} % "
                  f"({candidate - reference:+.2f} points, allowed drop: {rule.max_drop_points:.2f})")
        return Check(name, True, accuracy, champion, reason)
    if math.isnan(drop):
        reason = f"{name}: accuracy {accuracy!r} is not a number"
    else:
        reason = (f"{name}: {candidate:.2f} % is {drop:.2f} points below the champion's {reference:.2f} % "
                  f"(allowed: {rule.max_drop_points:.2f})")
    return Check(name, False, accuracy, champion, reason)


def _other_data_check(name: str, accuracy: float, data: str | None, champion_data: str | None,
                      champion: float | None) -> Check | None:
    """A failed check when the candidate was evaluated on other data than the champion, else None. Its
    reference is None: the champion's figure is not one to compare with."""
    if champion is None or not data or not champion_data or data == champion_data:
        return None
    reason = (f"{name}: {_points(accuracy):.2f} % on other data than the champion's {_points(champion):.2f} % "
              f"(data {data[:12]}, the champion's {champion_data[:12]}); no comparison")
    return Check(name, False, accuracy, None, reason)


def _missing_check(name: str, champion: float) -> Check:
    reason = f"{name}: not evaluated (the champion scored {_points(champion):.2f} %)"
    return Check(name, False, None, champion, reason)


def _points(fraction: float) -> float:
    return 100.0 * fraction


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{_points(fraction):.2f}"


def _safe_key(name: str) -> str:
    return _TAG_UNSAFE.sub("_", name)
