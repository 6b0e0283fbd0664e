"""The auditor's check of the published results: matches.parquet, features.parquet and each epoch's codes
(and revocations) in codes.sqlite against the digests the coordinator logged, and every match against the
queries and the cases that justify it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from audit.justify import Justifier
from audit.openings import Opening
from audit.service import ServiceIssuance, epoch_codes_digest_without, service_verdicts
from audit.verdicts import Notes, Verdict, differences, named, short
from coordinator.results import (
    SUMMARY_UNBOUND,
    directory_digests,
    file_digest,
    frame_digest,
    summary_digest,
)
from coordinator.store import CodeStore, StoreError
from crypto.errors import CryptoError
from crypto.pki import load_revocations
from runctx.pki import PkiPaths, load_pinned_trust_list
from runctx.progress import Progress

MATCH_COLUMNS = ["subject_id", "agency", "token", "case_id"]
EPOCH_FILES = (
    ("matches.parquet", "matches_written", MATCH_COLUMNS),
    ("features.parquet", "features_written", None),
)
"""The frames each epoch writes, with the entry that logs each and the columns its digest covers."""

Logged = tuple[str, str, dict[str, Any]]
"""(epoch, where, data) of a coordinator entry that binds a published file."""


class ResultChecks:
    """The result verdicts of one replay, from what its log checks gathered."""

    def __init__(
        self,
        run_dir: Path,
        logged: dict[str, dict[str, tuple[str, dict[str, Any]]]],
        last: dict[str, tuple[str, str, dict[str, Any]]],
        openings: list[Opening],
        epoch_window: Callable[[str], tuple[dt.date, int] | None],
        progress: Progress,
        service: ServiceIssuance | None = None,
        issued_at: dict[str, set[str]] | None = None,
    ) -> None:
        self.run_dir, self.logged, self.last, self.openings = run_dir, logged, last, openings
        self.epoch_window, self.progress = epoch_window, progress
        self.service = service or ServiceIssuance()
        """The codes the service issued under an epoch's id are left out of that epoch's digest."""
        self.issued_at = issued_at or {}

    def verdicts(self, justifier: Justifier) -> list[Verdict]:
        """The published files against the digests the coordinator logged."""
        coordinator = self.run_dir / "coordinator"
        out = [
            self._frame_verdict(coordinator / name, name, kind, columns, justifier, self.last.get(kind))
            for name, kind, columns in EPOCH_FILES
        ]
        self.progress("results", 1, 3)
        out += self._epoch_dir_verdicts(coordinator / "epochs", justifier)
        self.progress("results", 2, 3)
        out += self._codes_verdicts(coordinator / "codes.sqlite")
        out.append(self._revocation_list_verdict())
        out.append(self._qr_verdict(coordinator / "qr"))
        summary = coordinator / "epoch.json"
        out.append(self._summary_verdict(summary, summary.name, self.last.get("summary_written")))
        self.progress("results", 3, 3)
        return out

    def _epoch_dir_verdicts(self, root: Path, justifier: Justifier) -> list[Verdict]:
        """Each epoch's own files (`epochs/<as_of>/`) against the entries of the last epoch logged for that
        date, and a directory no logged epoch wrote."""
        latest: dict[str, str] = {}  # as_of → the last epoch logged for it (a re-run of the date rewrote it)
        for epoch, kinds in self.logged.items():
            span = self.epoch_window(epoch)
            if span is not None and any(kind in kinds for _, kind, _ in EPOCH_FILES):
                latest[span[0].isoformat()] = epoch
        out = []
        for day, epoch in sorted(latest.items()):
            kinds = self.logged[epoch]
            for name, kind, columns in EPOCH_FILES:
                logged = (epoch, *kinds[kind]) if kind in kinds else None
                item = f"epochs/{day}/{name}"
                out.append(self._frame_verdict(root / day / name, item, kind, columns, justifier, logged))
            summary = kinds.get("summary_written")
            out.append(self._summary_verdict(
                root / day / "epoch.json", f"epochs/{day}/epoch.json",
                None if summary is None else (epoch, *summary),
            ))
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for day in found:
            if day not in latest:
                out.append(Verdict("results", f"epochs/{day}/", "epoch", "fail",
                                   "no epoch of that date in the coordinator's log wrote it"))
        return out

    def _summary_verdict(self, path: Path, name: str, logged: Logged | None) -> Verdict:
        """An epoch summary against the digest its summary_written entry (`logged`) gave."""
        notes = Notes()
        kind = "summary_written"
        if logged is None:
            if path.exists():
                notes.fail(f"the coordinator's log has no {kind} entry for it")
            else:
                notes.warn(f"absent, and no epoch logged a {kind} entry")
            return notes.verdict("results", name, kind)
        epoch, where, data = logged
        try:
            summary = json.loads(path.read_bytes())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
            digest = summary_digest(summary)
        except (OSError, ValueError) as exc:
            notes.fail(f"unreadable ({exc}), but the {kind} entry at {where} logged it")
            return notes.verdict("results", name, kind)
        if digest != data.get("digest"):
            notes.fail(
                f"altered: digest {short(digest)}, but the {kind} entry at {where} logged "
                f"{short(data.get('digest'))}"
            )
        else:
            notes.ok(
                f"digest equals the {kind} entry at {where} (epoch {epoch}; all but "
                f"{', '.join(SUMMARY_UNBOUND)})"
            )
        return notes.verdict("results", name, kind)

    def _qr_verdict(self, directory: Path) -> Verdict:
        """Each QR image (payload text, index) against the digests its qr_written entry logged."""
        notes = Notes()
        kind = "qr_written"
        found = directory_digests(directory)
        if kind not in self.last:
            if found:
                notes.fail(f"the coordinator's log has no {kind} entry for {len(found)} files")
            else:
                notes.warn(f"absent, and no epoch logged a {kind} entry")
            return notes.verdict("results", "qr/", kind)
        epoch, where, data = self.last[kind]
        files = data.get("files")
        logged: dict[str, Any] = files if isinstance(files, dict) else {}
        changed, added, missing = differences(found, logged, lambda digest, bound: digest == bound)
        if changed:
            notes.fail(f"{len(changed)} files altered since the {kind} entry at {where}: {named(changed)}")
        if added:
            notes.fail(f"{len(added)} files the {kind} entry at {where} never logged: {named(added)}")
        if missing:
            notes.fail(f"{len(missing)} files logged at {where} are missing: {named(missing)}")
        notes.ok(f"{len(found)} files, each with the digest logged at {where} (epoch {epoch})")
        return notes.verdict("results", "qr/", kind)

    def _revocation_list_verdict(self) -> Verdict:
        """The home issuer's revocation list: the bytes the last revocations entry logged, a valid signature
        (the issuer's key on the pinned trust list), and only codes the log revoked."""
        notes = Notes()
        paths = PkiPaths(self.run_dir)
        name = paths.revocations.relative_to(self.run_dir).as_posix()
        if "revocations" not in self.last:
            notes.warn("no epoch logged a revocation list")
            return notes.verdict("results", name, "revocations")
        epoch, where, data = self.last["revocations"]
        try:
            digest = file_digest(paths.revocations)
        except OSError as exc:
            notes.fail(f"unreadable ({exc.strerror or exc}), but the revocations entry at {where} logged it")
            return notes.verdict("results", name, "revocations")
        if digest != data.get("list_digest"):
            notes.fail(
                f"altered: digest {short(digest)}, but the revocations entry at {where} logged "
                f"{short(data.get('list_digest'))}"
            )
        try:
            listed = load_revocations(paths.revocations, load_pinned_trust_list(paths)).revoked
        except (CryptoError, OSError, ValueError) as exc:
            notes.fail(f"its signature or form does not hold ({exc})")
            return notes.verdict("results", name, "revocations")
        logged = {
            str(c)
            for e in self.logged.values()
            if "revocations" in e
            for c in e["revocations"][1].get("revoked", [])
        }
        never = sorted(listed - logged)
        if never:
            notes.fail(f"revokes {len(never)} codes the log never revoked: {named(never)}")
        notes.ok(f"{len(listed)} codes, signed, digest as logged at {where} (epoch {epoch})")
        return notes.verdict("results", name, "revocations")

    def _frame_verdict(
        self, path: Path, name: str, kind: str, columns: list[str] | None, justifier: Justifier,
        logged: Logged | None,
    ) -> Verdict:
        """A published frame against the rows and digest its entry (`logged`) gave; matches also against the
        queries and the cases of that entry's epoch."""
        notes = Notes()
        if logged is None:
            if path.exists():
                notes.fail(f"the coordinator's log has no {kind} entry for it")
            else:
                notes.warn("absent, and no epoch logged it")
            return notes.verdict("results", name, kind)
        epoch, where, data = logged
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            missing = f"missing, but the {kind} entry at {where} logged it (epoch {epoch})"
            notes.fail(f"unreadable ({exc})" if path.exists() else missing)
            return notes.verdict("results", name, kind)
        digest = frame_digest(frame, columns or list(frame.columns))
        if digest != data.get("digest") or len(frame) != data.get("rows"):
            notes.fail(
                f"altered: {len(frame)} rows, digest {short(digest)}, but the {kind} entry at {where} "
                f"logged {data.get('rows')} rows, digest {short(data.get('digest'))}"
            )
        else:
            notes.ok(f"{len(frame)} rows, digest equals the {kind} entry at {where} (epoch {epoch})")
        if kind == "matches_written" and not notes.problems:
            self._matches_justified(frame, epoch, justifier, notes)
        return notes.verdict("results", name, kind)

    def _matches_justified(
        self, frame: pd.DataFrame, epoch: str, justifier: Justifier, notes: Notes
    ) -> None:
        """Every match row names a token that was queried and that its case (or a risk region) justifies."""
        span = self.epoch_window(epoch)
        risk = None if span is None else justifier.risk_set(*span)
        sep = "\x00"
        asked = {f"{b.agency}{sep}{t}" for o in self.openings if (b := o.batch) is not None for t in b.tokens}
        justified = (
            set()
            if risk is None
            else {
                f"{agency}{sep}{token}{sep}{case or ''}"
                for (agency, _, token), cases in risk.cases.items()
                for case in cases
            }
        )
        pairs = frame["agency"].astype(str) + sep + frame["token"].astype(str)
        cases = frame["case_id"].astype(object).where(frame["case_id"].notna(), "").astype(str)
        queried = pairs.isin(asked)
        backed = (pairs + sep + cases).isin(justified)
        never = list(frame["token"][~queried])
        unjustified = [
            f"{t} (case {c or 'none'})"
            for t, c in zip(frame["token"][queried & ~backed], cases[queried & ~backed], strict=True)
        ]
        if never:
            notes.fail(f"{len(never)} match rows name tokens never queried: {named(dict.fromkeys(never))}")
        if unjustified:
            notes.fail(
                f"{len(unjustified)} match rows not justified by their case or a risk region: "
                f"{named(dict.fromkeys(unjustified))}"
            )
        if not never and not unjustified:
            notes.ok("every row from a queried, justified token")

    def _codes_verdicts(self, path: Path) -> list[Verdict]:
        epochs = {e: v["codes_issued"] for e, v in self.logged.items() if "codes_issued" in v}
        if not path.exists():
            return [
                Verdict(
                    "results",
                    "codes.sqlite",
                    "codes_issued",
                    "fail" if epochs else "warn",
                    "absent" + (", yet codes were logged as issued" if epochs else ""),
                )
            ]
        out = []
        try:
            with CodeStore(path) as store:
                for epoch, (where, data) in sorted(epochs.items()):
                    notes = Notes()
                    digest, count = epoch_codes_digest_without(store, epoch, self.service.codes)
                    if digest != data.get("digest") or count != data.get("count"):
                        notes.fail(
                            f"altered: {count} codes, digest {short(digest)}, but the codes_issued entry "
                            f"at {where} logged {data.get('count')}, digest {short(data.get('digest'))}"
                        )
                    else:
                        served = store.count_codes(epoch) - count
                        also = f" (and {served} the service issued, checked below)" if served else ""
                        notes.ok(f"{count} codes, digest equals the codes_issued entry at {where}{also}")
                    out.append(notes.verdict("results", f"codes.sqlite epoch {epoch}", "codes_issued"))
                if "revocations" in self.last:
                    out.append(self._revocations_verdict(store))
                out += service_verdicts(store, self.service, self.issued_at, set(epochs))
        except (StoreError, OSError, ValueError) as exc:
            out.append(Verdict("results", "codes.sqlite", "codes_issued", "fail", f"unreadable ({exc})"))
        return out

    def _revocations_verdict(self, store: CodeStore) -> Verdict:
        """Every code the log says was revoked is revoked in the store, and the last total matches."""
        notes = Notes()
        stored = {r.code_id for r in store.revocations()}
        logged = {
            str(c)
            for e in self.logged.values()
            if "revocations" in e
            for c in e["revocations"][1].get("revoked", [])
        }
        _, where, data = self.last["revocations"]
        if logged - stored:
            notes.fail(
                f"codes logged as revoked but not revoked in the store: {named(sorted(logged - stored))}"
            )
        if data.get("total") != len(stored):
            notes.fail(
                f"the store holds {len(stored)} revocations, the revocations entry at {where} logged "
                f"{data.get('total')}"
            )
        notes.ok(f"{len(stored)} revocations, as logged at {where}")
        return notes.verdict("results", "codes.sqlite revocations", "revocations")
