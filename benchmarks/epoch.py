"""The epoch benchmark: the private epoch against a plaintext join of the same data, in the same run.

The city is simulated once (not timed into the epoch) and given its PKI; then each repetition starts from
no node or coordinator state and measures

- the **private epoch**: the nodes' tokenising and index building (one OPRF evaluation per distinct token,
  sealed labels) and the coordinator's whole epoch (risk set, blinded VOPRF queries with proofs, index
  streaming and lookups, matches and features, applicants, code issuance, revocations), per stage, with
  the bytes that crossed the transport;
- the **plaintext baseline**: the oracle's computation (`simulation.reference.compute_reference`: the same
  tokeniser over the same files, joined to the risk set with pandas), on one core as pandas runs it;
- **peak memory**: the resident set of this process and all its children (worker processes, node
  processes), sampled by a thread, per phase.

The private matches must equal the plaintext ones row for row, or the run fails.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import Step
from benchmarks.city import (
    CityBenchSettings,
    RssSampler,
    city_directory,
    equals_plaintext,
    fresh_start,
    machine,
    prepare_city,
)
from benchmarks.crypto import raw_operation_seconds
from benchmarks.measure import busy_seconds, other_cpu_share
from coordinator.applicants import applicants_path
from coordinator.epoch import EpochResult, run_epoch
from nodes.budget import CONFIG_FILE
from nodes.startup import BUILD_FILE, SOURCES_FILE
from proto.tokens import AGENCIES
from runctx.pki import PkiPaths
from runner.executors import default_workers, make_executor
from runner.pipeline import RunResult, serving_nodes
from simulation.reference import compute_reference

STAGES = ("tokenise", "index", "load", "manifests", "evaluate", "finalize", "stream", "match", "issue",
          "revocations")
"""The stages reported, in order: the nodes' build, then the coordinator's epoch."""
EPOCH_STAGE_NAMES = {"index": "stream", "features": "match", "issuance": "issue"}
"""`EpochResult.seconds` keys renamed for the report (the coordinator's "index" stage streams indexes)."""
MEMORY_NOTE = "no step holds more than one partition's records at a time"
MEMORY_DETAIL = (
    "A node build job (one per worker process) reads only the row groups that can reach its partition's "
    "day (its own day's and, for stays over midnight and multi-night hotel stays, the earlier ones that "
    "reach it), keeps that partition's records and tokens, and writes its index; the node process keeps "
    "only index metadata and entry offsets, and serves index chunks of 1 MiB read from disk. The "
    "coordinator keeps its own risk set, streams each partition's index in 1 MiB chunks and keeps only the "
    "sealed labels of the tags it asked for; codes are signed in batches of 10,000 and stored 250,000 to a "
    "transaction. What grows with the city is the output held until it is written: the matches, the "
    "features and one code per applicant. With "
    "N workers, N partitions are in memory at once, one per worker."
)


@dataclass(frozen=True)
class EpochBenchSettings(CityBenchSettings):
    """What one `bench epoch` run measures."""

    dask: str | None = None
    """A Dask scheduler (tls://HOST:PORT) or "local" to run the partitioned work on; None: local processes."""

    def steps(self) -> int:
        """How many progress steps `run_epoch_bench` reports."""
        return 1 + 3 * self.repetitions


def _matching_only(settings: EpochBenchSettings, run_dir: Path) -> float:
    """Seconds of a coordinator epoch without applicants (no identity queries, no codes) over the indexes the
    nodes already built: the matching alone, to set against the plaintext join, which does no more."""
    shutil.rmtree(run_dir / "coordinator", ignore_errors=True)
    for agency in AGENCIES:  # fresh budgets and logs; the indexes and keys are reused
        state = run_dir / "nodes" / agency
        for path in state.iterdir():
            if path.name not in ("index", "keys", SOURCES_FILE, CONFIG_FILE):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    applicants = applicants_path(run_dir)
    hidden = applicants.with_name(applicants.name + ".bench-hidden")
    result = RunResult(run_dir=run_dir)
    if applicants.exists():
        applicants.rename(hidden)
    try:
        with (
            make_executor(settings.workers, settings.dask, PkiPaths(run_dir)) as executor,
            serving_nodes(run_dir, settings.transport, settings.workers, result, None, executor) as nodes,
        ):
            epoch = run_epoch(run_dir, nodes, executor)
    finally:
        if hidden.exists():
            hidden.rename(applicants)
    return float(epoch.seconds["total"])


def _node_builds(run_dir: Path) -> dict[str, dict[str, Any]]:
    """What each node's index build did (RUN/nodes/<agency>/build.json, written by every node process)."""
    builds = {}
    for agency in AGENCIES:
        path = run_dir / "nodes" / agency / BUILD_FILE
        builds[agency] = json.loads(path.read_text()) if path.exists() else {}
    return builds


def _split_nodes(wall: float, builds: dict[str, dict[str, Any]]) -> tuple[float, float]:
    """The nodes' wall time split between tokenising and index building in proportion to the time the
    build jobs spent in each (the two run interleaved, in the same jobs)."""
    tokenise = sum(float(b.get("tokenise_seconds", 0.0)) for b in builds.values())
    index = sum(float(b.get("index_seconds", 0.0)) for b in builds.values())
    if tokenise + index <= 0:
        return 0.0, wall
    return wall * tokenise / (tokenise + index), wall * index / (tokenise + index)


def _repetition(
    settings: EpochBenchSettings, run_dir: Path, rss: RssSampler, step: Step, matching_only: bool = False
) -> dict[str, Any]:
    """One measurement of the private epoch and the plaintext join, from fresh node and coordinator state
    (and, when asked, of the matching alone, after them)."""
    fresh_start(run_dir, rss)
    result = RunResult(run_dir=run_dir)
    rss.enter("nodes")
    with make_executor(settings.workers, settings.dask, PkiPaths(run_dir)) as executor:
        started = time.perf_counter()
        with serving_nodes(run_dir, settings.transport, settings.workers, result, None, executor) as nodes:
            nodes_seconds = time.perf_counter() - started
            step("nodes: tokenise and index")
            rss.enter("epoch")
            epoch: EpochResult = run_epoch(run_dir, nodes, executor)
        step("coordinator epoch")
    private_peak = rss.take_peak()
    bad = {agency: code for agency, code in result.node_exit_codes.items() if code != 0}
    if bad:
        raise RuntimeError(f"node processes did not stop cleanly: {bad}")
    builds = _node_builds(run_dir)
    rss.enter("plaintext")
    started = time.perf_counter()
    reference = compute_reference(run_dir)
    plaintext_seconds = time.perf_counter() - started
    rss.enter("idle")
    step("plaintext join")
    if not equals_plaintext(run_dir / "coordinator" / "matches.parquet", reference.table):
        raise RuntimeError("the private matches differ from the plaintext join")
    matching_seconds = None
    if matching_only:
        rss.enter("matching only")
        matching_seconds = _matching_only(settings, run_dir)
        rss.enter("idle")
    tokenise, index = _split_nodes(nodes_seconds, builds)
    stages: dict[str, dict[str, float]] = {
        "tokenise": {"seconds": tokenise, "bytes": 0},
        "index": {"seconds": index, "bytes": 0},
    }
    for name, seconds in epoch.seconds.items():
        if name != "total":
            stages[EPOCH_STAGE_NAMES.get(name, name)] = {
                "seconds": seconds,
                "bytes": epoch.bytes.get(name, 0),
            }
    private_seconds = nodes_seconds + epoch.seconds["total"]
    return {
        "seconds": private_seconds,
        "nodes_seconds": nodes_seconds,
        "epoch_seconds": epoch.seconds["total"],
        "plaintext_seconds": plaintext_seconds,
        "issue_seconds": epoch.seconds.get("issuance", 0.0),
        "peak_rss_bytes": private_peak,
        "matching_epoch_seconds": matching_seconds,
        "stages": stages,
        "bytes": sum(epoch.bytes.values()),
        "builds": builds,
        "counts": {
            "risk_tokens": epoch.risk_tokens,
            "queried": epoch.queried,
            "matches": epoch.matches,
            "matched_subjects": epoch.matched_subjects,
            "codes_issued": epoch.codes_issued,
            "index_entries": sum(int(b.get("entries", 0)) for b in builds.values()),
            "index_bytes": sum(int(b.get("index_bytes", 0)) for b in builds.values()),
            "token_rows": sum(int(b.get("rows", 0)) for b in builds.values()),
            "plaintext_matches": len(reference.matches),
        },
    }


def _median_stages(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage, the median seconds and bytes over repetitions, in `STAGES` order (then any others)."""
    names = [s for s in STAGES if s in runs[0]["stages"]]
    names += [s for s in runs[0]["stages"] if s not in names]
    return {
        name: {
            "seconds": statistics.median(run["stages"].get(name, {}).get("seconds", 0.0) for run in runs),
            "bytes": int(statistics.median(run["stages"].get(name, {}).get("bytes", 0) for run in runs)),
        }
        for name in names
    }


def crypto_floor_seconds(counts: dict[str, int], raw: dict[str, float], workers: int) -> float:
    """Wall seconds of the epoch's unavoidable libsodium work at raw speed on `workers` cores (see the
    `crypto_floor_seconds` note)."""
    hash_mult, mult, add = raw["hash_to_group_mult"], raw["scalar_mult"], raw["point_add"]
    cpu = counts["index_entries"] * hash_mult + counts["queried"] * (hash_mult + 5 * mult + 3 * add)
    return cpu / workers


def run_epoch_bench(settings: EpochBenchSettings, step: Step | None = None) -> dict[str, Any]:
    """Run the epoch benchmark and return its figures (the `epoch` section of `healthpsi bench --json`)."""
    report = step or (lambda _: None)
    with city_directory(settings, "healthpsi-bench-epoch-") as run_dir:
        simulate_seconds = prepare_city(settings, run_dir)
        report("simulate")
        runs = []
        before = busy_seconds()
        with RssSampler() as rss:
            for i in range(settings.repetitions):
                runs.append(_repetition(settings, run_dir, rss, report, i == settings.repetitions - 1))
        foreign = other_cpu_share(before, busy_seconds())
        peaks = dict(rss.peaks)
    raw = raw_operation_seconds()
    workers = settings.workers or default_workers()
    seconds = statistics.median(run["seconds"] for run in runs)
    plaintext = statistics.median(run["plaintext_seconds"] for run in runs)
    price = statistics.median(run["seconds"] / run["plaintext_seconds"] for run in runs)
    unissued = statistics.median(
        (run["seconds"] - run["issue_seconds"]) / run["plaintext_seconds"] for run in runs
    )
    last = runs[-1]
    matching_price = (last["nodes_seconds"] + last["matching_epoch_seconds"]) / last["plaintext_seconds"]
    floor = crypto_floor_seconds(last["counts"], raw, workers)
    return {
        **settings.head(),
        "dask": settings.dask,
        "seconds": seconds,
        "peak_rss_bytes": max(run["peak_rss_bytes"] for run in runs),
        "privacy_price": price,
        "privacy_price_without_issuance": unissued,
        "privacy_price_matching": matching_price,
        "matching_epoch_seconds": last["matching_epoch_seconds"],
        "crypto_floor_seconds": floor,
        "crypto_floor_price": floor / last["plaintext_seconds"],
        "raw_operation_seconds": raw,
        "plaintext_seconds": plaintext,
        "plaintext_peak_rss_bytes": peaks.get("plaintext", 0),
        "simulate_seconds": simulate_seconds,
        "nodes_seconds": statistics.median(run["nodes_seconds"] for run in runs),
        "epoch_seconds": statistics.median(run["epoch_seconds"] for run in runs),
        "stages": _median_stages(runs),
        "bytes": int(statistics.median(run["bytes"] for run in runs)),
        "peak_rss_by_phase": {p: peaks[p] for p in ("nodes", "epoch", "plaintext") if p in peaks},
        "counts": runs[-1]["counts"],
        "node_builds": runs[-1]["builds"],
        "repetitions": [
            {
                k: run[k]
                for k in ("seconds", "nodes_seconds", "epoch_seconds", "plaintext_seconds", "peak_rss_bytes")
            }
            for run in runs
        ],
        "matches_equal_plaintext": True,
        "memory_note": MEMORY_NOTE,
        "memory_detail": MEMORY_DETAIL,
        "machine": machine(foreign),
        "settings": settings.to_json(),
        "notes": {
            "seconds": "private epoch: the nodes' tokenise + index build (wall, from no state) plus the "
            "coordinator's epoch (load, manifests, evaluate, finalize, stream, match, issue, revocations); "
            "simulation and key generation are not included",
            "stages": "tokenise and index run in the same build jobs; the nodes' wall time is split between "
            "them in proportion to the jobs' time in each. The indexes download on a helper thread while the "
            "batches are evaluated, so stream is what is left after evaluate: waiting for the rest of the "
            "download, looking up the tags and opening the labels. bytes: serialized messages over the "
            "transport (evaluate: blinded and evaluated elements with proofs; stream: the indexes)",
            "privacy_price": "median over repetitions of private seconds / plaintext seconds; the plaintext "
            "join is the oracle's pandas computation on one core, the private epoch uses the workers",
            "privacy_price_without_issuance": "the same without the issue stage (applicant decisions, "
            "signing and storing codes)",
            "privacy_price_matching": "(nodes' build + an epoch without applicants over the same indexes: "
            "no identity queries, no codes) / plaintext: the matching alone, which is all the plaintext join "
            "does (last repetition)",
            "crypto_floor_seconds": "the libsodium calls the private epoch cannot avoid, at raw speed, "
            "spread over the workers: per index entry one hash-to-group and scalar multiplication; per "
            "queried element the same to blind it, then five scalar multiplications (the node's evaluation, "
            "the proof's composite on each side, the second composite to verify, the unblinding) and three "
            "point additions (the three composites are sums). "
            "crypto_floor_price: that floor / plaintext seconds (last repetition)",
            "peak_rss_bytes": "largest resident set of this process plus every child (worker and node "
            "processes) during the nodes' build and the epoch, sampled every 50 ms (the processes listed "
            "once a second); the largest over the repetitions, each one's own in `repetitions`",
            "other_processes_cpu_share": "share of the machine's CPU time other processes used during the "
            "repetitions; above a few percent every figure here is slower than the machine can do",
        },
    }
