"""A guard check's result, a batch's report, and the warnings for checks close to their limit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NEAR_LIMIT = 0.8  # a passing value at or above this share of its limit is a warning
DRIFT_CHECKS = ("drift", "cumulative_drift")


@dataclass(frozen=True)
class Check:
    """One guard check: its value, the threshold it is held to, and a one-line reason.

    A check fails when its value is above its threshold (``rows``: below). Statistical checks
    report ``-log10`` of their smallest p-value against ``-log10`` of the corrected limit, so
    "above" keeps its meaning; ``value`` is None for a check that did not apply (the reason
    says why).
    """

    name: str
    value: float | None
    threshold: float
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchReport:
    """Every check run on a batch; the batch is accepted when all of them passed."""

    batch: str
    rows: int
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)  # passed, but close to a limit
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """True when no check failed."""
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        """One line per failed check."""
        return [f"{c.name}: {c.reason}" for c in self.checks if not c.passed]

    @property
    def near_limit(self) -> list[str]:
        """Names of the passed checks that came close to their limit (one per warning's check)."""
        return list(dict.fromkeys(w.split(":")[0] for w in self.warnings))

    def cumulative(self) -> dict[str, Any]:
        """The cumulative drift against the fixed reference window, for the report's summary.

        Per cumulative check: its value and limit, the rows in the window and since it, a one-line
        summary and the groups that moved most (``cumulative_label_given_inputs``: each group's
        observed and predicted share, excess rows and the direction its labels moved).
        """
        out = {}
        for c in self.checks:
            if c.name.startswith("cumulative_") and c.value is not None:
                out[c.name] = {"value": c.value, "threshold": c.threshold, "passed": c.passed,
                               **{k: v for k, v in c.details.items()
                                  if k in ("window", "since_window", "summary", "top")}}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: beside a quarantined batch, or in ``ingest.reports`` when accepted."""
        return {"batch": self.batch, "rows": self.rows, "accepted": self.accepted,
                "reasons": self.reasons, "warnings": self.warnings, "near_limit": self.near_limit,
                "provenance": self.provenance, "cumulative": self.cumulative(),
                "checks": [asdict(c) for c in self.checks]}


def bound(name: str, value: float, limit: float, what: str, details: dict | None = None) -> Check:
    """A check that fails when a share is above its limit, with a reason in percent."""
    passed = bool(value <= limit)
    verdict = "within" if passed else "above"
    return Check(name, round(value, 6), limit, passed,
                 f"{what} {value:.2%} is {verdict} the limit {limit:.2%}", details or {})


def _near(value: float, limit: float) -> bool:
    """True for a positive value at or above ``NEAR_LIMIT`` of its (upper) limit."""
    return bool(value > 0 and value >= NEAR_LIMIT * limit)


def _drift_warnings(c: Check, thresholds: dict[str, Any]) -> list[str]:
    lines = []
    scores = c.details.get("columns", {})
    limits = {"psi": thresholds["max_psi"], "tvd": thresholds["max_tvd"]}
    drifted = sorted(n for n, s in scores.items() if s["drifted"])
    if drifted:
        listed = ", ".join(f"{n} {scores[n]['metric']} {scores[n]['value']:.3f} > "
                           f"{limits[scores[n]['metric']]}" for n in drifted)
        lines.append(f"{c.name}: {len(drifted)} drifted column(s) ({listed}), "
                     f"within the limit of {c.threshold:.0f} drifted column(s)")
    for n, s in sorted(scores.items()):
        if not s["drifted"] and _near(s["value"], limits[s["metric"]]):
            lines.append(f"{c.name}: {n} {s['metric']} {s['value']:.3f} is near the limit "
                         f"{limits[s['metric']]}")
    return lines


def near_limit_warnings(checks: list[Check], thresholds: dict[str, Any]) -> list[str]:
    """One line per passed check close to its limit, and per drifted or nearly drifted column.

    Close means at least ``NEAR_LIMIT`` (80%) of an upper limit (for a statistical check: its
    ``-log10 p`` at 80% of the corrected limit's), or fewer than ``min_rows / NEAR_LIMIT``
    (1.25x) rows. Failed checks are reasons, not warnings.
    """
    lines = []
    for c in checks:
        if not c.passed or c.value is None:
            continue
        if c.name == "rows":
            if c.value < c.threshold / NEAR_LIMIT:
                lines.append(f"rows: {c.value:.0f} rows, near the minimum {c.threshold} "
                             f"(fewer than {c.threshold / NEAR_LIMIT:.0f})")
        elif c.name in DRIFT_CHECKS:
            lines += _drift_warnings(c, thresholds)
        elif _near(c.value, c.threshold):
            what = f" ({c.details['summary']})" if c.details.get("summary") else ""
            lines.append(f"{c.name}: {c.value:.4g} is near the limit {c.threshold:.4g} "
                         f"({c.value / c.threshold:.0%} of it){what}")
    return lines
