"""What the dashboard shows, read from the coordinator's files only (never RUN/truth/): codes by colour per
county, the change since the previous epoch, cases, the epidemic curve, risk regions, cells by risk,
refused applicants, revocations, appeals, checkpoint counts and venue check-ins per kind.

Every reader opens SQLite read-only except `decide_appeal`; a file that does not exist yet reads as empty.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from coordinator.claims import mask_id
from coordinator.service_log import APPEAL_DECIDED, ServiceLog
from crypto.codes import COLOURS
from proto.regions import COUNTIES, OTHER, county_of
from service.venue.book import local_now

APPEAL_DECISIONS = ("upheld", "rejected")
LIST_LIMIT = 200
"""Rows at most in a table of the dashboard (newest first); the totals count them all."""


@dataclass(frozen=True)
class Epoch:
    """A finished epoch of the coordinator."""

    epoch: str
    seq: int
    as_of: str


@contextlib.contextmanager
def _read(path: Path) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to `path`, or None when the file does not exist."""
    if not path.is_file():
        yield None
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        yield db
    finally:
        db.close()


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return (
        db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        is not None
    )


def codes_db(run: Path) -> Path:
    """RUN/coordinator/codes.sqlite."""
    return run / "coordinator" / "codes.sqlite"


def epochs(run: Path) -> list[Epoch]:
    """The finished epochs, oldest first."""
    with _read(codes_db(run)) as db:
        if db is None or not _has_table(db, "epochs"):
            return []
        rows = db.execute(
            "SELECT epoch, seq, as_of FROM epochs WHERE finished_at IS NOT NULL ORDER BY seq"
        ).fetchall()
    return [Epoch(str(e), int(s), str(a)) for e, s, a in rows]


def _empty_counts() -> dict[str, dict[str, int]]:
    return {county: dict.fromkeys(COLOURS, 0) for county in (*COUNTIES, OTHER)}


@functools.lru_cache(maxsize=16)
def _county_counts(path: Path, epoch: str) -> tuple[tuple[str, str, int], ...]:
    # a finished epoch's codes never change, so its counts are cached per process
    with _read(path) as db:
        if db is None:
            return ()
        rows = db.execute(
            "SELECT substr(subject_id, 1, 6), color, count(*) FROM codes WHERE epoch = ? "
            "GROUP BY substr(subject_id, 1, 6), color",
            (epoch,),
        ).fetchall()
    return tuple((county_of(str(s)), str(c), int(n)) for s, c, n in rows)


def colour_by_county(run: Path, epoch: str) -> dict[str, dict[str, int]]:
    """Codes of `epoch` by county (the id's registration county; `other` outside the city) and colour."""
    counts = _empty_counts()
    for county, colour, n in _county_counts(codes_db(run), epoch):
        counts[county][colour] += n
    return counts


def totals(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Codes by colour over every county."""
    return {colour: sum(by[colour] for by in counts.values()) for colour in COLOURS}


def change(run: Path) -> dict[str, Any]:
    """Codes by colour (in total and per county) in the latest epoch, the one before, and the difference."""
    known = epochs(run)
    if not known:
        return {"epoch": None, "previous": None, "now": {}, "before": {}, "delta": {}, "counties": {}}
    latest = known[-1]
    now = colour_by_county(run, latest.epoch)
    before = colour_by_county(run, known[-2].epoch) if len(known) > 1 else _empty_counts()
    return {
        "epoch": latest.as_of,
        "previous": known[-2].as_of if len(known) > 1 else None,
        "now": totals(now),
        "before": totals(before),
        "delta": {c: totals(now)[c] - totals(before)[c] for c in COLOURS},
        "counties": {county: {c: now[county][c] - before[county][c] for c in COLOURS} for county in now},
    }


def refusals(run: Path, epoch: str) -> dict[str, Any]:
    """Applicants refused in `epoch` (masked ids) and the count per reason."""
    with _read(codes_db(run)) as db:
        if db is None or not _has_table(db, "refusals"):
            return {"total": 0, "by_reason": {}, "rows": []}
        by_reason = dict(
            db.execute("SELECT reason, count(*) FROM refusals WHERE epoch = ? GROUP BY reason", (epoch,))
        )
        rows = db.execute(
            "SELECT subject_id, reason FROM refusals WHERE epoch = ? ORDER BY subject_id LIMIT ?",
            (epoch, LIST_LIMIT),
        ).fetchall()
    return {
        "total": sum(by_reason.values()),
        "by_reason": by_reason,
        "rows": [{"subject": mask_id(s), "county": county_of(s), "reason": r} for s, r in rows],
    }


def revocations(run: Path) -> dict[str, Any]:
    """Revoked codes, newest first (masked ids)."""
    with _read(codes_db(run)) as db:
        if db is None or not _has_table(db, "revocations"):
            return {"total": 0, "rows": []}
        total = db.execute("SELECT count(*) FROM revocations").fetchone()[0]
        rows = db.execute(
            "SELECT code_id, subject_id, epoch, reason, revoked_at FROM revocations "
            "ORDER BY revoked_at DESC, code_id LIMIT ?",
            (LIST_LIMIT,),
        ).fetchall()
    return {
        "total": int(total),
        "rows": [
            {"code_id": c, "subject": mask_id(s), "county": county_of(s), "reason": r, "revoked_at": at}
            for c, s, _e, r, at in rows
        ],
    }


def appeals(run: Path) -> dict[str, Any]:
    """Citizens' appeals (the citizen router writes them), open ones first, then newest first."""
    with _read(codes_db(run)) as db:
        if db is None or not _has_table(db, "appeals"):
            return {"total": 0, "by_status": {}, "rows": []}
        by_status = dict(db.execute("SELECT status, count(*) FROM appeals GROUP BY status"))
        rows = db.execute(
            "SELECT appeal_id, subject_id, code_id, reason, created_at, status FROM appeals "
            "ORDER BY status != 'open', created_at DESC LIMIT ?",
            (LIST_LIMIT,),
        ).fetchall()
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "rows": [
            {
                "appeal_id": str(a),
                "subject": mask_id(s),
                "county": county_of(s),
                "code_id": c,
                "reason": r,
                "created_at": at,
                "status": st,
            }
            for a, s, c, r, at, st in rows
        ],
    }


class AppealError(LookupError):
    """An appeal that does not exist or is already decided."""


def decide_appeal(run: Path, appeal_id: str, decision: str, operator: str) -> None:
    """Mark an open appeal `decision` ('upheld' or 'rejected') and bind the decision, and the `operator` who
    took it, in the service's signed log: the commander's only write to codes.sqlite."""
    if decision not in APPEAL_DECISIONS:
        raise ValueError(f"decision {decision!r}: expected one of {', '.join(APPEAL_DECISIONS)}")
    path = codes_db(run)
    if not path.is_file():
        raise AppealError(f"no appeal {appeal_id}")
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        if not _has_table(db, "appeals"):
            raise AppealError(f"no appeal {appeal_id}")
        row = db.execute("SELECT status FROM appeals WHERE appeal_id = ?", (appeal_id,)).fetchone()
        if row is None:
            raise AppealError(f"no appeal {appeal_id}")
        changed = db.execute(
            "UPDATE appeals SET status = ? WHERE appeal_id = ? AND status = 'open'", (decision, appeal_id)
        ).rowcount
        if not changed:
            raise AppealError(f"appeal {appeal_id} is already {row[0]}")
    finally:
        db.close()
    log = ServiceLog(run)
    log.append(
        [(APPEAL_DECIDED, {"epoch": "", "appeal_id": appeal_id, "decision": decision, "operator": operator})]
    )
    log.sign_head("appeals")


def checkpoint_counts(run: Path) -> dict[str, Any]:
    """Scans per checkpoint and result, over every day and on the latest day (RUN/service/counts.sqlite)."""
    with _read(run / "service" / "counts.sqlite") as db:
        if db is None or not _has_table(db, "scans"):
            return {"day": None, "total": 0, "rows": []}
        day = db.execute("SELECT max(day) FROM scans").fetchone()[0]
        rows = db.execute(
            "SELECT checkpoint, result, sum(n), sum(CASE WHEN day = ? THEN n ELSE 0 END) FROM scans "
            "GROUP BY checkpoint, result ORDER BY checkpoint, result",
            (day,),
        ).fetchall()
    per: dict[str, dict[str, Any]] = {}
    for checkpoint, result, n, today in rows:
        entry = per.setdefault(
            checkpoint, {"checkpoint": checkpoint, "total": 0, "today": 0, "by_result": {}}
        )
        entry["total"] += int(n)
        entry["today"] += int(today)
        entry["by_result"][result] = int(n)
    return {"day": day, "total": sum(e["total"] for e in per.values()), "rows": list(per.values())}


def venue_counts(run: Path) -> dict[str, Any]:
    """Check-ins scanned through the service, per kind of venue, on the run's day and in all (aggregates of
    the venue agency's journal, RUN/venues/venues.sqlite: no venue, person or time)."""
    day = local_now(run).date()
    with _read(run / "venues" / "venues.sqlite") as db:
        if db is None or not _has_table(db, "checkins"):
            return {"day": day.isoformat(), "total": 0, "rows": []}
        rows = db.execute(
            "SELECT v.kind, COUNT(*), SUM(c.at >= ? AND c.at < ?) "
            "FROM checkins c JOIN venues v USING (venue_id) GROUP BY v.kind ORDER BY v.kind",
            (day.isoformat(), (day + dt.timedelta(days=1)).isoformat()),
        ).fetchall()
    out = [{"kind": str(kind), "total": int(n), "today": int(today)} for kind, n, today in rows]
    return {"day": day.isoformat(), "total": sum(r["total"] for r in out), "rows": out}


@functools.lru_cache(maxsize=8)
def _parquet(path: Path, mtime_ns: int) -> pd.DataFrame:
    del mtime_ns  # part of the cache key: a rewritten file is read again
    return pq.read_table(path).to_pandas()


def _table(path: Path) -> pd.DataFrame | None:
    """A Parquet file as a (cached, shared: do not modify) frame, or None when it does not exist."""
    if not path.exists():
        return None
    return _parquet(path, path.stat().st_mtime_ns)


def _known_cases(run: Path, as_of: str | None) -> pd.DataFrame | None:
    cases = _table(run / "health" / "cases.parquet")
    if cases is None or as_of is None:
        return cases
    return cases[cases["report_date"] <= dt.date.fromisoformat(as_of)]


def cases(run: Path, as_of: str | None) -> dict[str, Any]:
    """Cases reported by `as_of` (the latest epoch's date), by status, with masked ids."""
    known = _known_cases(run, as_of)
    if known is None or known.empty:
        return {"total": 0, "by_status": {}, "rows": []}
    ordered = known.sort_values(["report_date", "case_id"], ascending=[False, True]).head(LIST_LIMIT)
    return {
        "total": len(known),
        "by_status": {str(k): int(v) for k, v in known["status"].value_counts().items()},
        "rows": [
            {
                "case_id": r.case_id,
                "subject": mask_id(r.subject_id),
                "county": county_of(r.subject_id),
                "status": r.status,
                "onset_date": r.onset_date.isoformat(),
                "report_date": r.report_date.isoformat(),
            }
            for r in ordered.itertuples()
        ],
    }


def curve(run: Path, as_of: str | None) -> list[dict[str, Any]]:
    """The epidemic curve: cases known by `as_of`, per day by onset date and by report date."""
    known = _known_cases(run, as_of)
    if known is None or known.empty:
        return []
    onset = known["onset_date"].value_counts()
    report = known["report_date"].value_counts()
    first, last = min(onset.index.min(), report.index.min()), max(onset.index.max(), report.index.max())
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    return [
        {"day": d.isoformat(), "onset": int(onset.get(d, 0)), "report": int(report.get(d, 0))} for d in days
    ]


def risk_regions(run: Path, as_of: str | None) -> list[dict[str, str]]:
    """Risk regions in force on `as_of` (all of them when no epoch has run)."""
    regions = _table(run / "health" / "risk_regions.parquet")
    if regions is None:
        return []
    if as_of is not None:
        day = dt.date.fromisoformat(as_of)
        regions = regions[(regions["from_date"] <= day) & (regions["to_date"] >= day)]
    return [
        {
            "region_code": r.region_code,
            "level": r.level,
            "from_date": r.from_date.isoformat(),
            "to_date": r.to_date.isoformat(),
        }
        for r in regions.sort_values(["level", "region_code"]).itertuples()
    ]


def cell_risk(run: Path) -> pd.DataFrame:
    """The city's cells (x_km, y_km, region_code) with `exposures`: distinct matched cell-hour tokens there,
    from the coordinator's latest matches (empty frame when there are no cells)."""
    cells = _table(run / "data" / "carrier" / "cells.parquet")
    if cells is None:
        return pd.DataFrame(columns=["cell_id", "region_code", "x_km", "y_km", "exposures"])
    city = cells[cells["region_code"].isin(COUNTIES)].copy()
    matches = _table(run / "coordinator" / "matches.parquet")
    per_cell = pd.Series(dtype="int64")
    if matches is not None and not matches.empty:
        tokens = pd.Series(matches["token"].unique())
        hours = tokens[tokens.str.startswith("cell-hour|")]
        per_cell = hours.str.split("|").str[1].astype("int64").value_counts()
    city["exposures"] = city["cell_id"].astype("int64").map(per_cell).fillna(0).astype("int64")
    return city
