"""One coordinator epoch: risk set → PSI matching at the nodes → matches, features, colours → checked
applicants → signed codes, revocations, audit log.

An epoch is named by its as_of date and a digest of everything it depends on (health records, applicants,
policy, the nodes' index digests), so running it again after a crash continues the same epoch: answers
already received are reused, indexes come from the cache, codes already stored are kept, and audit entries
already written are not repeated.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from coordinator import applicants as appl
from coordinator.features import compute_features, features_table
from coordinator.index_cache import IndexCache
from coordinator.issuance import (
    Signer,
    holders,
    iso,
    issue_codes,
    publish_revocations,
    revoke_worsened,
    write_qr_sample,
)
from coordinator.matching import Matcher, MatchStats, fetch_manifests
from coordinator.openings import OpeningStore, Query
from coordinator.policy import Policy
from coordinator.results import (
    assemble_matches,
    directory_digests,
    epoch_codes_digest,
    file_digest,
    frame_digest,
    matches_table,
    summary_digest,
)
from coordinator.risk import (
    HEALTH_FILES,
    build_risk_set,
    files_digest,
    load_health,
    load_scenario,
    tokens_digest,
)
from coordinator.sealing import storage_key
from coordinator.store import CodeStore
from coordinator.transport import NodeTransport
from crypto.auditlog import AuditLog, read_lines
from crypto.drbg import Rng
from crypto.pki import canonical_json, load_identity_key
from runctx.files import witness_dir, write_atomic
from runctx.pki import PkiPaths, load_identities
from runctx.progress import Progress, no_progress


@dataclass
class EpochResult:
    """What an epoch did: counts, per-stage seconds and bytes, and the files it wrote."""

    epoch: str
    seq: int
    as_of: str
    issued_at: str
    policy_version: str
    risk_tokens: int
    risk_partitions: int
    queried: int
    batches: int
    reused_answers: int
    indexes_downloaded: int
    indexes_cached: int
    absent_partitions: int
    matches: int
    matched_subjects: int
    features: int
    applicants: int
    accepted: int
    refused: dict[str, int]
    duplicate_applications: int
    codes_issued: int
    codes_total: int
    colours: dict[str, int]
    revoked: int
    revocations_total: int
    malformed: dict[str, dict[str, int]]
    seconds: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return asdict(self)


class EpochAudit:
    """The coordinator's audit log for one epoch: each entry carries the epoch and is written once, even
    when a crashed epoch is run again (an identical entry already in the log is not repeated)."""

    def __init__(self, path: Path, epoch: str, witness: Path | None = None) -> None:
        self.epoch = epoch
        self._seen: set[tuple[str, bytes]] = set()
        if path.exists():
            for line in read_lines(path):
                if line.strip():
                    entry = json.loads(line)
                    if isinstance(entry.get("data"), dict) and entry["data"].get("epoch") == epoch:
                        self._seen.add((entry["kind"], canonical_json(entry["data"])))
        self.log = AuditLog(path, witness=witness)

    def __call__(self, kind: str, **data: Any) -> None:
        """Append an entry (kind, data + epoch) unless the same entry is already logged."""
        data = {**data, "epoch": self.epoch}
        key = (kind, canonical_json(data))
        if key not in self._seen:
            self.log.append(kind, data)
            self._seen.add(key)

    def sign_head(self, identity_key: Any, **data: Any) -> None:
        """Close the epoch with a signed head entry (once)."""
        key = ("head", canonical_json({**data, "epoch": self.epoch}))
        if key not in self._seen:
            self.log.sign_head(identity_key, self.epoch, data)
            self._seen.add(key)

    def close(self) -> None:
        """Close the log file."""
        self.log.close()


def _write_parquet(table: Any, path: Path) -> None:
    """Write a parquet file atomically."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)



def epoch_dir(run_dir: Path, as_of: dt.date) -> Path:
    """`RUN/coordinator/epochs/<as_of>/`: one epoch's matches.parquet, features.parquet and epoch.json."""
    return Path(run_dir) / "coordinator" / "epochs" / as_of.isoformat()


def run_epoch(
    run_dir: Path | str,
    transports: Mapping[str, NodeTransport],
    executor: Executor | None = None,
    progress: Progress | None = None,
    *,
    policy_path: Path | str | None = None,
    as_of: dt.date | None = None,
    issued_at: dt.datetime | None = None,
    qr_per_colour: int = 4,
) -> EpochResult:
    """Run (or resume) the coordinator's epoch for the run in `run_dir` against the given nodes.

    Writes RUN/coordinator/epochs/<as_of>/{matches,features}.parquet and epoch.json (the latest also in
    RUN/coordinator/), codes.sqlite, openings/, cache/, qr/, audit.jsonl and
    RUN/pki/issuers/<region>/revocations.json.
    What an earlier epoch already holds is reused: answers of partitions whose key is unchanged (so
    only new tokens and new applicants are queried and charged) and indexes whose digest is unchanged.
    `as_of` defaults to the scenario's; codes are issued at `issued_at`, by default the day after as_of
    at 00:00 UTC in a simulation run (a seeded scenario) and the epoch's first start otherwise.
    """
    report = progress or no_progress
    clock = time.perf_counter
    seconds: dict[str, float] = {}
    t_start = t0 = clock()
    run = Path(run_dir)
    out_dir = run / "coordinator"
    out_dir.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(run)
    as_of = as_of or scenario.as_of
    paths = PkiPaths(run)
    secret = storage_key(run, scenario.rng("coordinator/storage"))
    identities = load_identities(paths)
    policy = Policy.load(policy_path)
    health = load_health(run)
    risk = build_risk_set(health, as_of, scenario.window_days)
    applicants = appl.load_applicants(run, as_of)
    declarations = appl.prepare(applicants) if applicants is not None else None
    queries = [
        Query(agency, pid, "risk", part.tokens)
        for agency, parts in risk.partitions.items()
        for pid, part in parts.items()
    ]
    if declarations is not None:
        queries += appl.identity_query(declarations)
    seconds["load"] = clock() - t0

    def blind_rng(agency: str, partition_id: str) -> Rng | None:
        return scenario.rng(f"coordinator/blinds/{agency}/{partition_id}")

    match_stats = MatchStats()
    manifests = fetch_manifests(
        transports,
        identities,
        {q.agency for q in queries} | set(transports),
        as_of.isoformat(),
        scenario.window_days,
        match_stats,
    )
    index_digests = [
        f"{agency}/{p.partition_id}/{p.index_digest.hex()}"
        for agency, m in sorted(manifests.items())
        for p in m.partitions
    ]
    policy_file = Path(policy_path) if policy_path is not None else None
    inputs = [run / "health" / name for name in HEALTH_FILES] + [appl.applicants_path(run)]
    extra = [as_of.isoformat(), str(scenario.window_days), policy.version, *index_digests]
    if policy_file is not None:
        extra.append(policy_file.read_text(encoding="utf-8"))
    inputs_digest = files_digest(inputs, extra)
    epoch = f"{as_of.isoformat()}.{inputs_digest[:12]}"

    store = CodeStore(out_dir / "codes.sqlite")
    default_issue = scenario.with_window(as_of).clock()
    seq, started = store.begin_epoch(epoch, as_of.isoformat(), inputs_digest, iso(issued_at or default_issue))
    issued = issued_at or dt.datetime.fromisoformat(started.replace("Z", "+00:00"))
    audit = EpochAudit(out_dir / "audit.jsonl", epoch, witness_dir(run, "coordinator"))
    matcher = Matcher(
        epoch,
        transports,
        identities,
        OpeningStore(out_dir / "openings", secret),
        IndexCache(out_dir / "cache"),
        as_of=as_of.isoformat(),
        window_days=scenario.window_days,
        blind_rng=blind_rng,
        manifests=manifests,
        stats=match_stats,
        executor=executor,
        audit=audit,
        progress=report,
    )
    try:
        audit(
            "epoch_started",
            seq=seq,
            as_of=as_of.isoformat(),
            window_days=scenario.window_days,
            inputs_digest=inputs_digest,
            policy_version=policy.version,
            issued_at=iso(issued),
        )
        for agency, parts in risk.partitions.items():
            for pid, part in parts.items():
                audit(
                    "risk_committed",
                    agency=agency,
                    partition_id=pid,
                    count=len(part.tokens),
                    tokens_digest=part.digest,
                )
        if declarations is not None:
            audit(
                "identities_committed",
                count=len(declarations.checked),
                tokens_digest=tokens_digest(declarations.checked["token"]),
            )

        found = matcher.run(queries)
        stats = matcher.stats
        seconds.update(stats.seconds)

        t0 = clock()
        matches = assemble_matches(risk.rows, found)
        day_dir = epoch_dir(run, as_of)
        day_dir.mkdir(parents=True, exist_ok=True)
        _write_parquet(matches_table(matches), day_dir / "matches.parquet")
        _write_parquet(matches_table(matches), out_dir / "matches.parquet")
        matches_digest = frame_digest(matches, ["subject_id", "agency", "token", "case_id"])
        audit(
            "matches_written",
            rows=len(matches),
            subjects=int(matches["subject_id"].nunique()),
            digest=matches_digest,
        )
        symptoms = appl.load_symptoms(run, as_of)
        features = compute_features(matches, health.cases, health.risk_regions, symptoms)
        _write_parquet(features_table(features), day_dir / "features.parquet")
        _write_parquet(features_table(features), out_dir / "features.parquet")
        colours = policy.assess_frame(features, issued.date())
        audit("features_written", rows=len(features), digest=frame_digest(features, list(features.columns)))
        seconds["features"] = clock() - t0

        t0 = clock()
        accepted = pd.DataFrame(columns=["subject_id", "name", "birth_date"])
        refused: list[tuple[str, str]] = []
        if declarations is not None:
            police = {pid for agency, pid in found if agency == "police"}
            register: dict[str, list[str]] = {}
            for pid in police:
                register.update(found[("police", pid)])
            accepted, refused = appl.decide(declarations, register)
            store.insert_refusals(epoch, refused)
            audit(
                "applicants_checked",
                applicants=0 if applicants is None else len(applicants),
                accepted=len(accepted),
                refused=len(refused),
                duplicates=declarations.duplicates,
            )
        people = holders(accepted, colours)
        issue = issue_codes(
            store,
            epoch,
            people,
            signer=Signer.load(paths),
            secret=secret,
            policy_version=policy.version,
            issued_at=issued,
            executor=executor,
            progress=lambda done, total: report("issuance", done, total),
        )
        codes_digest = epoch_codes_digest(store, epoch)
        audit("codes_issued", count=issue.total, digest=codes_digest)
        seconds["issuance"] = clock() - t0

        t0 = clock()
        revoked = revoke_worsened(
            store, epoch, dict(zip(colours["subject_id"], colours["color"], strict=True)), issued
        )
        revocations_total = publish_revocations(paths, store, issued)
        audit(
            "revocations",
            new=len(revoked),
            total=revocations_total,
            revoked=sorted(r.code_id for r in revoked),
            list_digest=file_digest(paths.revocations),
        )
        write_qr_sample(store, epoch, out_dir / "qr", qr_per_colour)
        audit("qr_written", files=directory_digests(out_dir / "qr"))
        seconds["revocations"] = clock() - t0
        seconds["total"] = clock() - t_start

        colour_counts = store.colour_counts(epoch)
        warnings = []
        if applicants is None:
            warnings.append(f"{appl.applicants_path(run)} is missing: no applicants, no codes issued")
        if stats.absent_partitions:
            warnings.append(
                f"{stats.absent_partitions} risk partitions are not served by their node (no records)"
            )
        refused_counts: dict[str, int] = {}
        for _, reason in refused:
            refused_counts[reason] = refused_counts.get(reason, 0) + 1
        result = EpochResult(
            epoch=epoch,
            seq=seq,
            as_of=as_of.isoformat(),
            issued_at=iso(issued),
            policy_version=policy.version,
            risk_tokens=risk.token_count,
            risk_partitions=sum(len(p) for p in risk.partitions.values()),
            queried=stats.evaluated,
            batches=stats.batches,
            reused_answers=stats.reused_answers,
            indexes_downloaded=stats.indexes_downloaded,
            indexes_cached=stats.indexes_cached,
            absent_partitions=stats.absent_partitions,
            matches=len(matches),
            matched_subjects=int(matches["subject_id"].nunique()),
            features=len(features),
            applicants=0 if applicants is None else len(applicants),
            accepted=len(accepted),
            refused=refused_counts,
            duplicate_applications=0 if declarations is None else declarations.duplicates,
            codes_issued=issue.new,
            codes_total=issue.total,
            colours=colour_counts,
            revoked=len(revoked),
            revocations_total=revocations_total,
            malformed=stats.malformed,
            seconds={k: round(v, 3) for k, v in seconds.items()},
            bytes=dict(stats.bytes),
            files={
                "matches": str(day_dir / "matches.parquet"),
                "features": str(day_dir / "features.parquet"),
                "codes": str(store.path),
                "audit": str(out_dir / "audit.jsonl"),
                "qr": str(out_dir / "qr"),
                "revocations": str(paths.revocations),
            },
            warnings=warnings,
        )
        store.finish_epoch(epoch, iso(dt.datetime.now(dt.UTC)), result.to_json())
        summary = result.to_json()
        audit("summary_written", digest=summary_digest(summary))
        audit.sign_head(
            load_identity_key(paths.coordinator_identity_key),
            matches_digest=matches_digest,
            codes_digest=codes_digest,
            codes=issue.total,
            revocations=revocations_total,
            randomness=scenario.randomness,
            summary_digest=summary_digest(summary),
        )
        summary_bytes = (json.dumps(summary, indent=2) + "\n").encode()
        write_atomic(day_dir / "epoch.json", summary_bytes)
        write_atomic(out_dir / "epoch.json", summary_bytes)
        return result
    finally:
        audit.close()
        store.close()
