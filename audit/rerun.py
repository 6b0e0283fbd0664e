"""Comparisons with a fresh re-run: row digests of the result files (the latest and each day's) and the codes,
and the audit logs byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from audit.logs import COORDINATOR_LOG
from audit.results import MATCH_COLUMNS
from audit.service import epoch_codes_digest_without
from audit.verdicts import Verdict, short
from coordinator.results import frame_digest
from coordinator.risk import InputError, load_scenario
from coordinator.store import CodeStore, StoreError


def file_frame_digest(path: Path, columns: list[str] | None) -> str | None:
    """A result file's row digest (None when it is absent or unreadable)."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError):
        return None
    return frame_digest(frame, columns or list(frame.columns))


def codes_digests(path: Path, served: Collection[str] = ()) -> str | None:
    """One digest over every epoch's codes digest and the codes' signed payloads (None when absent), the
    codes the service issued (`served`: no re-run of the scenario makes them) left out."""
    if not path.exists():
        return None
    try:
        with CodeStore(path) as store:
            rows = [r for r in store.codes() if r.code_id not in served]
            h = hashlib.sha256()
            for epoch in sorted({r.epoch for r in rows}):
                h.update(f"{epoch}|{epoch_codes_digest_without(store, epoch, served)[0]}\n".encode())
            for r in rows:
                h.update(f"{r.code_id}|{r.payload}\n".encode())
            return h.hexdigest()
    except (StoreError, OSError, ValueError):
        return None


def compare(section: str, item: str, kind: str, mine: str | None, theirs: str | None) -> Verdict:
    """Equal digests hold; a missing or different one does not."""
    if mine is None or theirs is None:
        where = "this run" if mine is None else "the re-run"
        return Verdict(section, item, kind, "fail", f"absent or unreadable in {where}")
    if mine != theirs:
        return Verdict(
            section,
            item,
            kind,
            "fail",
            f"differs from the re-run: {short(mine)} here, {short(theirs)} re-run",
        )
    return Verdict(section, item, kind, "ok", f"equals the re-run ({short(mine)})")


def calls_by_kind(lines: list[bytes]) -> dict[str, list[str]] | None:
    """A log's entries without their chain fields (`prev`, `seq`, `sig`), in order within each kind (None
    when a line is not a JSON entry): what the log holds, whatever the interleaving of concurrent calls."""
    out: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            out[str(entry["kind"])].append(json.dumps(entry.get("data"), sort_keys=True))
        except (ValueError, TypeError, KeyError):
            return None
    return dict(out)


def compare_log(name: str, mine: Path, theirs: Path, deterministic: bool) -> Verdict:
    """A log byte for byte against the re-run's. Entries that differ only in how the calls of different
    kinds interleaved (an index streamed while a batch was evaluated) hold: each kind's entries, in their
    order, must be equal. Any other difference fails in a deterministic run."""
    try:
        a, b = mine.read_bytes(), theirs.read_bytes()
    except OSError as exc:
        return Verdict("rerun", name, "log", "fail", f"cannot compare ({exc.strerror or exc})")
    la, lb = a.split(b"\n"), b.split(b"\n")
    if a == b:
        return Verdict(
            "rerun", name, "log", "ok", f"byte for byte equal to the re-run ({len(la) - 1} entries)"
        )
    if b and a.startswith(b) and b.endswith(b"\n"):
        return Verdict(
            "rerun", name, "log", "ok",
            f"its first {len(lb) - 1} entries are byte for byte the re-run's; the {len(la) - len(lb)} after "
            "them came later (the code service's identity checks, a node serving it), checked above",
        )
    line = next((i for i, (x, y) in enumerate(zip(la, lb, strict=False)) if x != y), min(len(la), len(lb)))
    mine_calls = calls_by_kind(la)
    if mine_calls is not None and mine_calls == calls_by_kind(lb):
        return Verdict(
            "rerun", name, "log", "ok",
            f"the re-run's entries, each kind in the same order ({len(la) - 1} entries); concurrent calls "
            f"interleaved differently from line {line + 1}",
        )
    reason = f"differs from the re-run from line {line + 1} ({len(la) - 1} lines here, {len(lb) - 1} re-run)"
    if not deterministic:
        return Verdict("rerun", name, "log", "warn",
                       reason + "; the run is not deterministic, so logs may differ")
    return Verdict("rerun", name, "log", "fail", reason)


def rerun_verdicts(
    mine: Path, theirs: Path, deterministic: bool, served: Collection[str] = ()
) -> list[Verdict]:
    """Compare a run with a fresh re-run of its scenario: results by digest (the codes the service issued,
    `served`, left out), logs byte for byte (a difference in a log fails only in a deterministic run)."""
    out = []
    try:
        a, b = load_scenario(mine).raw, load_scenario(theirs).raw
        same = {k: (a.get(k), b.get(k)) for k in ("preset", "seed", "persons", "as_of", "deterministic")}
        differ = {k: v for k, v in same.items() if v[0] != v[1]}
        out.append(
            Verdict(
                "rerun",
                "scenario.json",
                "scenario",
                "fail" if differ else "ok",
                f"differs: {differ}"
                if differ
                else f"same scenario {same['preset'][0]} seed {same['seed'][0]}",
            )
        )
    except InputError as exc:
        out.append(Verdict("rerun", "scenario.json", "scenario", "fail", str(exc)))
    days = sorted({p.name for run in (mine, theirs) for p in (run / "coordinator" / "epochs").glob("*/")})
    for folder in ["", *(f"epochs/{day}/" for day in days)]:  # the latest files, then each day's
        for name, columns in (("matches.parquet", MATCH_COLUMNS), ("features.parquet", None)):
            paths = [run / "coordinator" / folder / name for run in (mine, theirs)]
            digests = [file_frame_digest(path, columns) for path in paths]
            out.append(compare("rerun", folder + name, "results", *digests))
    codes = [codes_digests(run / "coordinator" / "codes.sqlite", served) for run in (mine, theirs)]
    out.append(compare("rerun", "codes.sqlite", "codes", *codes))
    nodes = {
        str(p.relative_to(run)) for run in (mine, theirs) for p in (run / "nodes").glob("*/audit.jsonl")
    }
    for name in [COORDINATOR_LOG, *sorted(nodes)]:
        out.append(compare_log(name, mine / name, theirs / name, deterministic))
    return out
