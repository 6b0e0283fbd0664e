"""Node start-up: the node's state directory locked for one process, partitions that left the window
destroyed, indexes reused when their data, window, key and digest still hold, the others (re)built one
partition at a time, and the handlers returned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crypto.auditlog import AuditLog
from crypto.drbg import Rng
from nodes import build, keys
from nodes import index as idx
from nodes.budget import BudgetLedger, BudgetPolicy, config_path
from nodes.handlers import DEFAULT_MAX_BATCH, NodeHandlers, Partition
from nodes.keys import KeyStore, KeyStoreError, PartitionKey
from nodes.secrets import NodeSecrets
from nodes.store import AgencyStore, StoreError
from proto import layout
from proto.tokens import parse_partition_id
from runctx.files import witness_dir, write_atomic
from runctx.scenario import Scenario

log = logging.getLogger("healthpsi.node")

SOURCES_FILE = "sources.json"
"""In RUN/nodes/<agency>/: the data-file digest, window, partitions and malformed counts of the last build."""
BUILD_FILE = "build.json"
"""In RUN/nodes/<agency>/: what the last build did (`nodes.build.BuildStats`: partitions, rows, seconds)."""

Clock = Callable[[], dt.datetime]
Progress = Callable[[str, int, int, bool], None]
"""progress(partition_id, partitions done, partitions expected, reused)."""


class NodeBusy(ValueError):
    """The node's state directory is already in use by another node process."""


def node_scenario(run_dir: Path, as_of: dt.date | None = None, window_days: int | None = None) -> Scenario:
    """The run's scenario (`runctx.scenario.Scenario.load`), its date and window overridden by explicit
    arguments; without a scenario file (an agency's own deployment) the window ends on `as_of` or today."""
    scenario = Scenario.read(run_dir) or Scenario(as_of=as_of or dt.date.today())
    return scenario.with_window(as_of, window_days)


def node_dir(run_dir: Path, agency: str) -> Path:
    """RUN/nodes/<agency>: the node's state directory."""
    return Path(run_dir) / "nodes" / agency


DATE_FILE = "date"
"""In RUN/nodes/<agency>/: the run's clock, "YYYY-MM-DD", written by whoever advances a simulated run."""
CLOCKS = ("auto", "wall", "run")


def date_source(run_dir: Path, agency: str, clock: str = "auto") -> Callable[[], dt.date | None]:
    """Where a serving node reads its date: `wall` the wall clock (production), `run` the run's clock in
    RUN/nodes/<agency>/date (None while there is none); `auto` is `run` in a simulation (a seeded
    scenario), else `wall`."""
    if clock not in CLOCKS:
        raise ValueError(f"clock {clock!r}: expected one of {', '.join(CLOCKS)}")
    if clock == "auto":
        scenario = Scenario.read(Path(run_dir))
        clock = "run" if scenario is not None and scenario.seed is not None else "wall"
    if clock == "wall":
        return dt.date.today
    path = node_dir(run_dir, agency) / DATE_FILE

    def run_date() -> dt.date | None:
        """The date in the node's date file, if there is one (an unreadable one is logged and ignored)."""
        try:
            return dt.date.fromisoformat(path.read_text().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("%s: not a date (%s)", path, exc)
            return None

    return run_date


def open_node(
    run_dir: Path,
    agency: str,
    executor: Executor | None = None,
    *,
    budget: BudgetPolicy | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    chunk_bytes: int = idx.DEFAULT_CHUNK_BYTES,
    as_of: dt.date | None = None,
    window_days: int | None = None,
    progress: Progress | None = None,
    clock: Clock | None = None,
) -> NodeHandlers:
    """Load an agency node's state from RUN/nodes/<agency>/, building missing or stale indexes, and return
    its handlers.

    Partition data comes from `nodes.store.AgencyStore` one partition at a time. An index is reused when
    its metadata, key and digest match the partition's current rows; otherwise it is (re)built with one
    VOPRF evaluation per distinct token over `executor`. Keys and indexes of partitions that left the
    window are destroyed and the destruction is logged. In a deterministic simulation run (RUN/scenario.json
    with a seed and `"deterministic": true`) keys and proof nonces come from the run's DRBG, so the node's
    outputs are reproducible; otherwise from the OS. The manifest and every log head say which.
    """
    run_dir = Path(run_dir)
    scenario = node_scenario(run_dir, as_of, window_days)
    policy = (budget or BudgetPolicy()).over(BudgetPolicy.read(config_path(run_dir, agency)))
    node_dir(run_dir, agency).mkdir(parents=True, exist_ok=True)
    lock = lock_state(node_dir(run_dir, agency))
    # this process holds the state now: a port file still there was left by a node killed without a stop
    (node_dir(run_dir, agency) / "port").unlink(missing_ok=True)
    try:
        state = _NodeState(run_dir, agency, scenario)
        state.destroy_expired()
        partitions, malformed, stats = state.load_partitions(executor, progress)
        _set_budgets(state, partitions, policy)
        handlers = NodeHandlers(
            agency,
            partitions,
            state.ledger,
            state.audit,
            state.identity_key,
            as_of=scenario.as_of,
            window_days=scenario.window_days,
            malformed=malformed,
            max_batch=max_batch,
            chunk_bytes=chunk_bytes,
            executor=executor,
            clock=clock or state.clock,
            proof_rng=state.proof_rng,
            randomness=scenario.randomness,
            lock=lock,
        )
    except BaseException:
        os.close(lock)
        raise
    handlers.build_stats = stats
    handlers.roller = NodeRoller(handlers, state, executor, policy)
    handlers.sign_head("opened")
    return handlers


class NodeRoller:
    """Moves a serving node to its next date without a restart: the new day's partitions built, days with
    late rows rebuilt under fresh keys, days that left the window crypto-shredded, the manifest renewed."""

    def __init__(
        self, handlers: NodeHandlers, state: _NodeState, executor: Executor | None, policy: BudgetPolicy
    ) -> None:
        self.handlers, self._state, self._executor, self._policy = handlers, state, executor, policy
        self._lock = threading.Lock()

    def roll(self, as_of: dt.date, progress: Progress | None = None) -> bool:
        """Serve `as_of` from now on; False when the node already serves it. A node's date never goes back
        (ValueError)."""
        with self._lock:
            state, handlers = self._state, self.handlers
            if as_of == handlers.as_of:
                return False
            if as_of < handlers.as_of:
                raise ValueError(f"a node's date only moves forward: it serves {handlers.as_of}, not {as_of}")
            state.scenario = state.scenario.with_window(as_of)
            partitions, malformed, stats = state.load_partitions(self._executor, progress)
            _set_budgets(state, partitions, self._policy)
            replaced = handlers.swap(as_of, partitions, malformed)
            state.destroy_expired()
            for part in replaced:
                part.index.close()
            handlers.build_stats = stats
            state.audit.append("node_rolled", {"as_of": as_of.isoformat(), "partitions": len(partitions),
                                               "built": stats.built, "reused": stats.reused})
            handlers.sign_head("rolled")
            log.info("%s node now serves %s: %d partitions (%d built, %d reused)", state.agency, as_of,
                     len(partitions), stats.built, stats.reused)
            return True


def _set_budgets(state: _NodeState, partitions: Mapping[str, Partition], policy: BudgetPolicy) -> None:
    """Set every served partition's cap (`set_budget`) for the node's date."""
    for pid, part in partitions.items():
        cap = policy.cap(pid, part.meta.entry_count)
        set_budget(state.ledger, state.audit, pid, cap, state.scenario.as_of, part.key_version)


def lock_state(state: Path) -> int:
    """Take the node's state directory for this process (an exclusive lock, released when the process
    ends); NodeBusy when another node process or handler already holds it."""
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NodeBusy(f"{state} is in use by another node (one node process per agency and run)") from None
    return fd


class _NodeState:
    """What lives in a locked node state directory: sealed keys, indexes, budgets and the audit log."""

    def __init__(self, run_dir: Path, agency: str, scenario: Scenario) -> None:
        self.run_dir, self.agency, self.scenario = run_dir, agency, scenario
        self.dir = node_dir(run_dir, agency)
        self.index_dir = self.dir / "index"
        secrets = NodeSecrets.of(run_dir, agency)
        self.identity_key = secrets.load_identity()
        self.keystore = KeyStore(self.dir / "keys", agency, secrets.load_storage(), secrets.day_keys,
                                 self.day_key_rng)
        self.ledger = BudgetLedger(self.dir / "state.sqlite")
        self.audit = AuditLog(self.dir / "audit.jsonl", witness=witness_dir(run_dir, f"nodes/{agency}"))

    def clock(self) -> dt.datetime:
        """The scenario's clock as the manifest carries it (naive, to the second)."""
        return self.scenario.clock().replace(tzinfo=None)

    def partition_rng(self, partition_id: str) -> Rng | None:
        """The DRBG stream of a partition in a simulation run (None: system randomness)."""
        return self.scenario.rng(f"node/{self.agency}/{partition_id}")

    def day_key_rng(self, day: str) -> Rng | None:
        """The DRBG stream of a day's wrapping key in a simulation run (None: system randomness)."""
        return self.scenario.rng(f"node/{self.agency}/day-key/{day}")

    def key_rng(self, partition_id: str, version: int) -> Rng | None:
        """The DRBG stream of a partition's key of `version` in a simulation run (None: system randomness)."""
        stream = self.partition_rng(partition_id)
        return stream if stream is None or version == 1 else stream.child(f"key/v{version}")

    def proof_rng(self, partition_id: str, inputs_digest: bytes) -> Rng | None:
        """Per-request proof nonce stream in a simulation run, keyed by the partition and the inputs."""
        stream = self.partition_rng(partition_id)
        return None if stream is None else stream.child(f"proof/{inputs_digest.hex()}")

    def destroy_expired(self) -> None:
        """Crypto-shred every day that left the window (its wrapping key deleted), then delete the sealed
        keys, indexes and stored responses of its partitions; log it."""
        keystore, window = self.keystore, [d.isoformat() for d in self.scenario.window]
        for pid in sorted(set(keystore.partitions()) | set(idx.indexed_partitions(self.index_dir))):
            if not self.scenario.in_window(pid):
                _, day = parse_partition_id(pid)
                # the day's kinds share its wrapping key: shredded with the first of them
                shredded = day is not None and (keystore.shred_day(day.isoformat())
                                                or not keystore.day_key_path(day.isoformat()).exists())
                destroyed = keystore.destroy(pid)
                idx.remove_index(self.index_dir, pid)
                forgotten = self.ledger.forget_responses(pid)
                self.audit.append("partition_key_destroyed", {"partition_id": pid, "key_found": destroyed,
                                                              "day_key_shredded": shredded,
                                                              "stored_responses_deleted": forgotten,
                                                              "window": window})
                log.info("partition %s left the window: key destroyed", pid)
        first = self.scenario.window[0].isoformat()
        for old_day in keystore.days():
            if old_day < first and keystore.shred_day(old_day):
                self.audit.append("day_key_shredded", {"day": old_day, "window": window})

    def load_partitions(
        self, executor: Executor | None, progress: Progress | None
    ) -> tuple[dict[str, Partition], dict[str, int], build.BuildStats]:
        """Every partition of the window with the malformed counts and what was built: all reused when the
        data files and window are those of the last build, else read and built (or reused) one by one."""
        sources = source_digest(self.run_dir, self.agency, self.scenario.as_of)
        record = self.dir / SOURCES_FILE
        reused_all = _reuse_all(record, sources, self.scenario, self.index_dir, self.keystore)
        stats = build.BuildStats()
        if reused_all is not None:
            partitions, malformed = reused_all
            stats.partitions = stats.reused = len(partitions)
            for done, pid in enumerate(partitions, start=1):
                if progress is not None:
                    progress(pid, done, len(partitions), True)
            return partitions, malformed, stats
        store = AgencyStore(self.run_dir, self.agency, self.scenario.as_of)
        partitions, stats = _build_partitions(self, store, executor, progress)
        malformed = store.malformed
        if self.agency == "carrier":
            store.cells()  # read here too when workers built every day: its problems are named below
        for path, why in store.unreadable.items():
            log.warning("%s: %s; skipped, the rest is served", path, why)
            self.audit.append("data_file_skipped", {"file": path, "reason": why[:500]})
        for path, rows in store.duplicates.items():
            log.warning("%s: %d rows repeat an earlier row exactly; skipped", path, rows)
            self.audit.append("duplicate_rows_skipped", {"file": path, "rows": rows})
        for name, rows in store.good_rows.items():
            if rows == 0:
                log.warning("%s: the %s dataset holds no usable rows", self.agency, name)
        _save_sources(self.dir / SOURCES_FILE, sources, self.scenario, list(partitions), malformed)
        write_atomic(self.dir / BUILD_FILE, json.dumps(stats.to_json(), indent=1, sort_keys=True).encode())
        return partitions, malformed, stats


def set_budget(
    ledger: BudgetLedger, audit: AuditLog, partition_id: str, cap: int, epoch: dt.date, key_version: int = 1
) -> None:
    """Set a partition's budget cap and, when it is new or changed, log it (`budget_set`: total and used)
    so that an auditor can check every charge in the log against the cap in force. A static partition's
    budget is per epoch, a day partition's per key: on a new date (static) or a fresh key after late rows
    (day) its use goes back to 0, logged first (`budget_reset`)."""
    try:
        previous: int | None = ledger.budget(partition_id).total
    except KeyError:
        previous = None
    budget = ledger.set_total(partition_id, cap)
    if previous != cap:
        audit.append("budget_set", {"partition_id": partition_id, "total": budget.total, "used": budget.used})
    _, day = parse_partition_id(partition_id)
    period = epoch.isoformat() if day is None else f"key v{key_version}"
    current = ledger.epoch(partition_id)
    if current != period and (day is None or current is not None or budget.used):
        audit.append("budget_reset", {"partition_id": partition_id, "epoch": period,
                                      "key_version": key_version, "total": budget.total,
                                      "used_before": budget.used})
    if current != period:
        ledger.start_epoch(partition_id, period)


def source_digest(run_dir: Path, agency: str, as_of: dt.date | None = None) -> str:
    """Hex SHA-256 over the paths (relative to RUN/data/<agency>/) and contents of the agency's data files
    delivered by `as_of` (`proto.layout.agency_files`)."""
    digest = hashlib.sha256()
    root = Path(run_dir) / "data" / agency
    try:
        paths = layout.agency_files(root, as_of) if root.is_dir() else []
    except layout.LayoutError as exc:
        raise StoreError(str(exc)) from None
    for path in paths:
        with path.open("rb") as fh:
            name = path.relative_to(root).as_posix()
            digest.update(name.encode() + b"\0" + hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def _save_sources(
    path: Path, sources: str, scenario: Scenario, partitions: list[str], malformed: Mapping[str, int]
) -> None:
    """Record which data files and window the indexes were built from, so a restart can skip re-reading."""
    record = {"sources": sources, "window": [d.isoformat() for d in scenario.window],
              "partitions": partitions, "malformed": dict(malformed)}
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True).encode(), durable=False)


def _reuse_all(
    path: Path, sources: str, scenario: Scenario, index_dir: Path, keystore: KeyStore
) -> tuple[dict[str, Partition], dict[str, int]] | None:
    """Every partition reused without reading the data, when the data files and window are those the
    indexes were built from and every index and key checks out; else None."""
    try:
        record = json.loads(path.read_text())
        window = [d.isoformat() for d in scenario.window]
        current = record["sources"] == sources and record["window"] == window
        pids = [str(pid) for pid in record["partitions"]]
        malformed = {str(k): int(v) for k, v in record["malformed"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not current:
        return None
    partitions: dict[str, Partition] = {}
    for pid in pids:
        part = _reuse(pid, index_dir, keystore, None)
        if part is None:
            for opened in partitions.values():
                opened.index.close()
            return None
        partitions[pid] = part
    return partitions, malformed


def _reuse(
    partition_id: str, index_dir: Path, keystore: KeyStore, fingerprint: bytes | None
) -> Partition | None:
    """The partition's existing index and key if they are intact, consistent and (when `fingerprint` is
    given) built from rows with that fingerprint; else None."""
    meta = idx.load_meta(index_dir, partition_id)
    try:
        key = keystore.load(partition_id)
    except KeyStoreError as exc:
        log.warning("sealed key of %s is unusable (%s)", partition_id, exc)
        return None
    if meta is None or key is None or meta.public_key != key.pk or meta.rows_digest != key.rows_digest:
        return None
    if fingerprint is not None and meta.rows_digest != fingerprint:
        return None
    try:
        index = idx.open_index(index_dir, meta)
    except idx.IndexFileError as exc:
        log.warning("index of %s is unusable (%s)", partition_id, exc)
        return None
    log.info("index reused for %s: %d entries, digest %s", partition_id, meta.entry_count,
             meta.index_digest.hex()[:16])
    return Partition(index, key.sk, key.version)


@dataclass
class _Planned:
    """A job about to be built: per partition of it, its sealed key (if any), a fresh key in case its rows
    are new or changed, and the metadata of its index on disk."""

    job: build.PartitionJob
    current: dict[str, PartitionKey | None]
    fresh: dict[str, PartitionKey | None]
    previous: dict[str, str | None]


def _plan(job: build.PartitionJob, index_dir: Path, state: _NodeState) -> _Planned:
    """The keys each partition of a job may be built with: its sealed key and a fresh one of the next
    version (sealed only if the partition turns out to have new or changed rows)."""
    plan = _Planned(job, {}, {}, {})
    for pid in job.partition_ids:
        try:
            current = state.keystore.load(pid)
        except KeyStoreError:
            current = None
        version = 1 if current is None else current.version + 1
        plan.current[pid] = current
        plan.fresh[pid] = keys.generate(version, b"", state.key_rng(pid, version))
        meta = idx.load_meta(index_dir, pid)
        plan.previous[pid] = None if meta is None else meta.to_json()
    return plan


def _build_partitions(
    state: _NodeState, store: AgencyStore, executor: Executor | None, progress: Progress | None
) -> tuple[dict[str, Partition], build.BuildStats]:
    """Tokenise and index every partition of the window, one `nodes.build.build_partition` job per dataset
    day over the executor (in order, in-process without one); reuse indexes built from the same rows under
    the same key.

    Keys, audit entries and progress follow the partitions' order whatever order the jobs finish in.
    """
    started = time.perf_counter()
    index_dir, keystore, audit = state.index_dir, state.keystore, state.audit
    jobs = build.partition_jobs(store, state.scenario.window)
    plans = [_plan(job, index_dir, state) for job in jobs]
    stats = build.BuildStats(workers=type(executor).__name__ if executor is not None else "in-process")
    expected = sum(len(plan.job.partition_ids) for plan in plans)

    def args(plan: _Planned, previous: Mapping[str, str | None] | None) -> tuple[Any, ...]:
        return (str(state.run_dir), state.agency, plan.job, str(index_dir), plan.current, plan.fresh,
                previous)

    if executor is None:
        results: Iterator[list[build.BuildOutcome]] = (
            build.build_partition(*args(p, p.previous)) for p in plans
        )
    else:
        futures = [executor.submit(build.build_partition, *args(p, p.previous)) for p in plans]
        results = (f.result() for f in futures)
    partitions: dict[str, Partition] = {}
    done = 0
    for plan, outcomes in zip(plans, results, strict=True):
        rebuilt: list[build.BuildOutcome] | None = None
        for position, outcome in enumerate(outcomes):
            pid = outcome.partition_id
            done += 1
            store.merge_counts(outcome.counts)
            part = None
            if outcome.fingerprint is not None and outcome.reused:
                part = _reuse(pid, index_dir, keystore, outcome.fingerprint)
                if part is None:  # the index on disk is unusable after all: build the job here, without it
                    rebuilt = rebuilt or build.build_partition(*args(plan, None))
                    outcome = dataclasses.replace(rebuilt[position], counts={})
            meta = None
            if outcome.fingerprint is not None and part is None:
                assert outcome.meta is not None
                meta = idx.IndexMeta.from_json(outcome.meta)
                assert outcome.key is not None
                if outcome.fresh:
                    _replace_key(state, pid, plan.current[pid], outcome.key)
                audit.append("index_built", {"partition_id": pid, "entry_count": meta.entry_count,
                                             "index_sha256": meta.index_digest.hex()})
                log.info("index built for %s: %d entries from %d rows in %.2fs, digest %s", pid,
                         meta.entry_count, outcome.rows, outcome.tokenise_seconds + outcome.index_seconds,
                         meta.index_digest.hex()[:16])
                offsets = np.frombuffer(outcome.offsets, dtype=np.int64) if outcome.offsets else None
                index = idx.open_index(index_dir, meta, offsets)
                part = Partition(index, outcome.key.sk, outcome.key.version)
            if part is not None:
                partitions[pid] = part
            stats.add(outcome, part.meta if part is not None else None)
            if progress is not None:
                progress(pid, done, expected, outcome.fingerprint is None or outcome.reused)
    stats.wall_seconds = time.perf_counter() - started
    return partitions, stats


def _replace_key(state: _NodeState, partition_id: str, old: PartitionKey | None, new: PartitionKey) -> None:
    """Seal a partition's fresh key over its old one (which no index uses any more), forget the responses
    stored under the old key, and log both."""
    state.keystore.store(partition_id, new)
    if old is not None:
        forgotten = state.ledger.forget_responses(partition_id)
        state.audit.append("partition_key_destroyed", {
            "partition_id": partition_id, "key_version": old.version, "public_key": old.pk.hex(),
            "reason": "rows changed", "stored_responses_deleted": forgotten})
    state.audit.append("partition_key_created", {
        "partition_id": partition_id, "key_version": new.version, "public_key": new.pk.hex(),
        "rows_sha256": new.rows_digest.hex()})
