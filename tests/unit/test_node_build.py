"""Per-partition build jobs: the partitions the streaming store yields, the same indexes over any executor."""

from __future__ import annotations

import datetime as dt
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from crypto import labels
from nodes import build
from nodes import keys as nk
from nodes.keys import KeyReuseError
from nodes.startup import open_node
from nodes.store import AgencyStore
from proto import layout
from proto.tokens import AGENCIES
from runctx.pki import init_keys
from runner.enrollment import enroll_nodes
from simulation.scenario import simulate

WINDOW = (dt.date(2020, 1, 18), dt.date(2020, 1, 31))


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-person city with its PKI."""
    run = tmp_path_factory.mktemp("build") / "run"
    simulate("city-20k", 11, run, persons=400)
    init_keys(run)
    enroll_nodes(run, AGENCIES)
    return run


def _rows(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(zip(frame["subject_id"].astype(str), frame["token"].astype(str), strict=True))


def _same_partitions(run: Path, agency: str) -> None:
    streamed_store = AgencyStore(run, agency)
    streamed = {pid: _rows(frame) for pid, frame in streamed_store.iter_partitions(WINDOW)}
    planner = AgencyStore(run, agency)
    jobs = build.partition_jobs(planner, WINDOW)
    planned = [pid for job in jobs for pid in job.partition_ids]
    assert planned == planner.partition_ids(WINDOW) == list(streamed)
    for job in jobs:
        worker = AgencyStore(run, agency)
        together = sorted(row for pid in job.partition_ids for row in streamed[pid])
        assert _rows(build.read_rows(worker, job)) == together, job
        planner.merge_counts(worker.counts())
    assert planner.malformed == streamed_store.malformed
    assert planner.good_rows == streamed_store.good_rows


@pytest.mark.parametrize("agency", AGENCIES)
def test_jobs_read_the_partitions_the_store_streams(city: Path, agency: str) -> None:
    _same_partitions(city, agency)


def test_jobs_without_row_group_statistics(city: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(city, run)
    for agency, name in (("carrier", "stays"), ("police", "hotel_stays")):
        for file in layout.dataset_files(run / "data" / agency, name):
            path = file.path
            source = pq.ParquetFile(path)
            tmp = path.with_name(f".{path.name}.tmp")
            with pq.ParquetWriter(tmp, source.schema_arrow, write_statistics=False) as out:
                for g in range(source.num_row_groups):
                    out.write_table(source.read_row_group(g))
            tmp.replace(path)
    store = AgencyStore(run, "carrier")
    jobs = build.partition_jobs(store, WINDOW)
    assert all(len(job.groups) == store.row_groups("stays") > 14 for job in jobs)
    _same_partitions(run, "carrier")
    _same_partitions(run, "police")


def test_stays_over_midnight_read_the_day_before(city: Path) -> None:
    jobs = [j for j in build.partition_jobs(AgencyStore(city, "carrier"), WINDOW) if j.day is not None]
    assert any(len(job.groups) > 1 for job in jobs)
    # a day reads its own files (on time and late) and those of the day before, for the stays over midnight
    days = AgencyStore(city, "carrier").row_group_days("stays")
    assert all({days[g][0] for g in job.groups} <= {job.day - 1, job.day} for job in jobs)


def test_seal_packed_equals_seal() -> None:
    key = bytes(range(32))
    for bodies in ([], [5], [1, 2, 3], list(range(10, 10 + 9)), [2**60, 2**64 - 2]):
        packed = b"".join(b.to_bytes(8, "big") for b in bodies)
        assert labels.seal_packed(key, packed) == labels.seal(key, bodies)
    with pytest.raises(labels.LabelError):
        labels.seal_packed(key, b"\x00" * 7)


def _manifest_digests(run: Path, executor: ProcessPoolExecutor | None) -> dict[str, dict[str, str]]:
    out = {}
    for agency in AGENCIES:
        handlers = open_node(run, agency, executor)
        try:
            assert handlers.build_stats is not None and handlers.build_stats.built > 0
            out[agency] = {pid: p.meta.index_digest.hex() for pid, p in handlers.partitions.items()}
            out[agency]["malformed"] = str(sorted(handlers.malformed.items()))
        finally:
            handlers.close()
    return out


@pytest.mark.slow
def test_open_node_over_a_process_pool_builds_the_same_indexes(city: Path, tmp_path: Path) -> None:
    local, pooled = tmp_path / "local", tmp_path / "pooled"
    for target in (local, pooled):
        shutil.copytree(city, target)
    in_process = _manifest_digests(local, None)
    with ProcessPoolExecutor(max_workers=2) as pool:
        over_pool = _manifest_digests(pooled, pool)
    assert in_process == over_pool
    keys = sorted(p.name for p in (local / "nodes/carrier/keys").iterdir())
    assert keys == sorted(p.name for p in (pooled / "nodes/carrier/keys").iterdir())
    for name in keys:  # keys (and their sealing) come from the run's seed, whichever process built the index
        sealed = [(run / "nodes/carrier/keys" / name).read_bytes() for run in (local, pooled)]
        assert sealed[0] == sealed[1]


def test_a_key_bound_to_other_rows_is_refused(city: Path, tmp_path: Path) -> None:
    job = next(j for j in build.partition_jobs(AgencyStore(city, "carrier"), WINDOW) if j.groups)
    stale = dict.fromkeys(job.partition_ids, nk.generate(1, b"\x00" * 32))
    with pytest.raises(KeyReuseError, match="need a fresh key"):
        build.build_partition(str(city), "carrier", job, str(tmp_path), stale, {})
    fresh = {pid: nk.generate(2, b"") for pid in job.partition_ids}
    outcomes = build.build_partition(str(city), "carrier", job, str(tmp_path), stale, fresh)
    assert [o.partition_id for o in outcomes] == job.partition_ids == [
        f"cell-hour@{job.date}", f"region-day@{job.date}"
    ]
    for built in outcomes:  # each kind's partition under its own fresh key
        assert built.fresh and built.key is not None and built.key.version == 2
        assert built.key.rows_digest == built.fingerprint and built.key.pk == fresh[built.partition_id].pk
