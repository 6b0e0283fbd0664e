"""Verdicts and the replay report: one verdict per checked item, the notes that build it, and the report
that gathers them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

Status = Literal["ok", "warn", "fail"]
"""A verdict: the item holds; holds with a caveat (not a failure); does not hold."""
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail")
NAMED = 3
"""How many offending items a reason names before it says "and N more"."""



def named(items: Iterable[str], total: int | None = None) -> str:
    """The first few items, and how many more there are."""
    items = list(items)
    total = len(items) if total is None else total
    return ", ".join(items[:NAMED]) + (f" and {total - NAMED} more" if total > NAMED else "")


Found = TypeVar("Found")
Logged = TypeVar("Logged")


def differences(
    found: Mapping[str, Found], logged: Mapping[str, Logged], agree: Callable[[Found, Logged], bool]
) -> tuple[list[str], list[str], list[str]]:
    """Names found whose item does not `agree` with what was logged, names found but never logged, and names
    logged but not found (each sorted): an audit's altered, added and missing."""
    altered = sorted(n for n, item in found.items() if n in logged and not agree(item, logged[n]))
    return altered, sorted(set(found) - set(logged)), sorted(set(logged) - set(found))


def short(digest: object) -> str:
    """A digest shortened for a message."""
    return f"{str(digest)[:16]}…"


# ------------------------------------------------------------------------------------------------- report




@dataclass(frozen=True)
class Verdict:
    """The verdict on one item: a log entry, an opening, a partition's budget, a result file, a comparison."""

    section: str
    """Where the item lives: "inputs", a log ("coordinator/audit.jsonl", "nodes/carrier/audit.jsonl"),
    "risk set", "openings", "budgets", "results" or "rerun"."""
    item: str
    """Which item: "line 12 (seq 11)", "carrier/cell-hour@2020-01-18/<key>", "matches.parquet", ..."""
    kind: str
    """The entry kind, or what was checked ("opening", "budget", "matches", ...)."""
    status: Status
    reason: str


@dataclass
class ReplayReport:
    """Every verdict of a replay, the tokens nothing justifies, counts, and the time the replay took."""

    run_dir: str
    verdicts: list[Verdict] = field(default_factory=list)
    unjustified: list[dict[str, str]] = field(default_factory=list)
    """One row per queried token nothing justifies: agency, partition_id, token, purpose, epoch, query
    (the opening's idempotency key) and reason."""
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every verdict holds (warnings allowed)."""
        return all(v.status != "fail" for v in self.verdicts)

    @property
    def failures(self) -> list[Verdict]:
        """The verdicts that do not hold."""
        return [v for v in self.verdicts if v.status == "fail"]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per section (in report order), how many verdicts are ok, warn and fail."""
        out: dict[str, dict[str, int]] = {}
        for v in self.verdicts:
            out.setdefault(v.section, dict.fromkeys(STATUSES, 0))[v.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "run": self.run_dir,
            "ok": self.ok,
            "summary": self.summary(),
            "counts": self.counts,
            "seconds": round(self.seconds, 3),
            "unjustified": self.unjustified,
            "verdicts": [asdict(v) for v in self.verdicts],
        }


class Notes:
    """What the checks found about one item: problems (fail), caveats (warn) and what held."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.caveats: list[str] = []
        self.held: list[str] = []

    def fail(self, text: str) -> None:
        """Record a problem: the item does not hold."""
        self.problems.append(text)

    def warn(self, text: str) -> None:
        """Record a caveat."""
        self.caveats.append(text)

    def ok(self, text: str) -> None:
        """Record something that held."""
        self.held.append(text)

    def verdict(self, section: str, item: str, kind: str) -> Verdict:
        """The item's verdict: its problems, else its caveats, else what held."""
        if self.problems:
            return Verdict(section, item, kind, "fail", "; ".join(self.problems))
        if self.caveats:
            return Verdict(section, item, kind, "warn", "; ".join(self.caveats + self.held))
        return Verdict(section, item, kind, "ok", "; ".join(self.held) or "ok")
