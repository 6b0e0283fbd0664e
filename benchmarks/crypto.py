"""The crypto benchmark: OPRF rates against raw libsodium, one core against two, and OpenMined PSI.

Every ratio compares figures measured in the same run. The raw baselines call libsodium through ctypes
with preallocated buffers on precomputed inputs (the hash-to-group baseline starts from the 64 uniform
bytes, so it leaves out the SHA-512 expansion our path pays for). Each figure is the median of several
repetitions, the measurements interleaved so that drift in the machine's load hits all of them alike.
"""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import pysodium

from benchmarks import Step
from benchmarks.measure import busy_seconds, other_cpu_share, rate
from crypto import group, labels, oprf
from crypto.drbg import Drbg
from crypto.oprf import Mode


@dataclass(frozen=True)
class CryptoBenchSettings:
    """Sizes of one benchmark run."""

    items: int = 20_000
    """Elements per rate measurement."""
    repeat: int = 5
    """Repetitions of the rate measurements (medians reported)."""
    psi_server: int = 100_000
    psi_client: int = 1_000
    psi_overlap: int = 500
    psi_repeat: int = 3
    workers: int = 2
    openmined_fpr: float = 1e-9

    @classmethod
    def quick(cls) -> CryptoBenchSettings:
        """Small sizes for tests: seconds, not minutes (the figures are noisy)."""
        return cls(items=600, repeat=2, psi_server=2_000, psi_client=100, psi_overlap=40, psi_repeat=1)

    def steps(self) -> int:
        """How many progress steps `run_crypto_bench` reports."""
        return 1 + 6 * self.repeat + 2 * self.psi_repeat


def _tokens(prefix: str, start: int, count: int) -> list[bytes]:
    """Token-shaped inputs, distinct for distinct indices."""
    return [
        f"cell-hour|{prefix}{i}|2020-02-{1 + i % 14:02d}T{i % 24:02d}".encode()
        for i in range(start, start + count)
    ]


def _raw_scalar_mult(sk: bytes, elements: list[bytes]) -> None:
    """Baseline: libsodium scalar multiplication in a bare ctypes loop."""
    out = ctypes.create_string_buffer(group.ELEMENT_BYTES)
    mult = pysodium.sodium.crypto_scalarmult_ristretto255
    for element in elements:
        mult(out, sk, element)


def _raw_point_add(elements: list[bytes]) -> None:
    """Baseline: libsodium ristretto255 point addition (a running sum, as a proof's composite makes)."""
    acc = ctypes.create_string_buffer(group.ELEMENT_BYTES)
    add = pysodium.sodium.crypto_core_ristretto255_add
    for element in elements:
        add(acc, acc, element)


def _raw_hash_mult(sk: bytes, uniforms: list[bytes]) -> None:
    """Baseline: libsodium's ristretto255 map from 64 uniform bytes, then scalar multiplication."""
    point = ctypes.create_string_buffer(group.ELEMENT_BYTES)
    out = ctypes.create_string_buffer(group.ELEMENT_BYTES)
    from_hash = pysodium.sodium.crypto_core_ristretto255_from_hash
    mult = pysodium.sodium.crypto_scalarmult_ristretto255
    for uniform in uniforms:
        from_hash(point, uniform)
        mult(out, sk, point)


def raw_operation_seconds(items: int = 2_000, repeat: int = 3) -> dict[str, float]:
    """Median seconds per raw libsodium operation on one core: `hash_to_group_mult` (map 64 uniform bytes
    to the group, then a scalar multiplication), `scalar_mult` and `point_add`."""
    rng = Drbg(b"healthpsi raw operations")
    sk, _ = oprf.generate_key_pair(rng.child("key"))
    uniforms = [rng.random_bytes(group.UNIFORM_BYTES) for _ in range(items)]
    elements = [group.hash_to_group(u, b"raw operations") for u in _tokens("r", 0, items)]
    hash_mult, mult, add = [], [], []
    for _ in range(repeat):
        hash_mult.append(1 / rate(items, lambda: _raw_hash_mult(sk, uniforms)))
        mult.append(1 / rate(items, lambda: _raw_scalar_mult(sk, elements)))
        add.append(1 / rate(items, lambda: _raw_point_add(elements)))
    return {
        "hash_to_group_mult": statistics.median(hash_mult),
        "scalar_mult": statistics.median(mult),
        "point_add": statistics.median(add),
    }


def _warm(pool: Executor, workers: int) -> None:
    """Start every worker process and import the crypto modules there before anything is timed."""
    sk = oprf.generate_key_pair(Drbg(b"warm"))[0]
    list(pool.map(oprf.blind_evaluate_packed, [sk] * 2 * workers, [group.GENERATOR] * 2 * workers))


def _rates(settings: CryptoBenchSettings, pool: Executor, step: Step) -> dict[str, list[float]]:
    """Samples of the per-core rates of BlindEvaluate and Evaluate, their raw baselines, and the two-core
    rates: one per repetition, each repetition measuring all of them back to back."""
    rng = Drbg(b"healthpsi bench crypto")
    sk, _ = oprf.generate_key_pair(rng.child("key"))
    inputs = _tokens("", 0, settings.items)
    _, packed = oprf.blind_many(inputs, Mode.VOPRF, rng.child("blinds"))
    elements = group.split_packed(packed)
    uniforms = [rng.random_bytes(group.UNIFORM_BYTES) for _ in inputs]
    n = settings.items
    measurements: dict[str, Callable[[], float]] = {
        "raw_scalar_mult_per_s": lambda: rate(n, lambda: _raw_scalar_mult(sk, elements)),
        "blind_evaluate_per_s": lambda: rate(n, lambda: oprf.blind_evaluate_packed(sk, packed)),
        "raw_hash_to_group_mult_per_s": lambda: rate(n, lambda: _raw_hash_mult(sk, uniforms)),
        "evaluate_per_s": lambda: rate(n, lambda: oprf.evaluate_many(sk, inputs, Mode.VOPRF)),
        "blind_evaluate_two_cores_per_s": lambda: rate(
            n, lambda: oprf.blind_evaluate_packed(sk, packed, pool)
        ),
        "evaluate_two_cores_per_s": lambda: rate(
            n, lambda: oprf.evaluate_many(sk, inputs, Mode.VOPRF, pool)
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in measurements}
    for _ in range(settings.repeat):
        for name, measure in measurements.items():
            samples[name].append(measure())
            step(f"rates: {name}")
    return samples


def _median_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median over repetitions of each repetition's ratio (robust to drift between repetitions)."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def _workload(settings: CryptoBenchSettings) -> tuple[list[bytes], list[bytes], set[int]]:
    """Server items, client items, and the client indices that are in the server set."""
    server = _tokens("s", 0, settings.psi_server)
    client = _tokens("s", settings.psi_server - settings.psi_overlap, settings.psi_overlap)
    client += _tokens("c", 0, settings.psi_client - settings.psi_overlap)
    return server, client, set(range(settings.psi_overlap))


def _ours(server: list[bytes], client: list[bytes], pool: Executor) -> tuple[set[int], dict[str, float]]:
    """Our path: the node evaluates its items into an index of tags; the client blinds, the node
    blind-evaluates with a DLEQ proof, the client verifies, finalizes and looks the tags up."""
    start = time.perf_counter()
    sk, pk = oprf.generate_key_pair()
    index = set(map(labels.derive_tag, oprf.evaluate_many(sk, server, Mode.VOPRF, pool)))
    indexed = time.perf_counter()
    blinds, packed = oprf.blind_many(client, Mode.VOPRF)
    evaluated = oprf.blind_evaluate_packed(sk, packed, pool)
    blinded, elements = group.split_packed(packed), group.split_packed(evaluated)
    proof = oprf.generate_proof(sk, pk, blinded, elements, executor=pool)
    oprf.verify_proof(pk, blinded, elements, proof, executor=pool)
    outputs = oprf.finalize_many(client, blinds, evaluated)
    found = {i for i, y in enumerate(outputs) if labels.derive_tag(y) in index}
    done = time.perf_counter()
    return found, {"index_seconds": indexed - start, "query_seconds": done - indexed, "seconds": done - start}


def _openmined(server: list[str], client: list[str], fpr: float) -> tuple[set[int], dict[str, float]]:
    """OpenMined PSI on the same workload: server setup message, then request, response and intersection."""
    import private_set_intersection.python as psi

    start = time.perf_counter()
    psi_client = psi.client.CreateWithNewKey(True)
    psi_server = psi.server.CreateWithNewKey(True)
    setup = psi_server.CreateSetupMessage(fpr, len(client), server)
    ready = time.perf_counter()
    request = psi_client.CreateRequest(client)
    response = psi_server.ProcessRequest(request)
    found = set(psi_client.GetIntersection(setup, response))
    done = time.perf_counter()
    return found, {"setup_seconds": ready - start, "query_seconds": done - ready, "seconds": done - start}


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-key medians of several runs' timings."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _comparison(settings: CryptoBenchSettings, pool: Executor, step: Step) -> dict[str, Any]:
    """Ours against OpenMined PSI on one membership workload; both must find exactly the overlap."""
    server, client, expected = _workload(settings)
    server_text, client_text = [x.decode() for x in server], [x.decode() for x in client]
    ours_runs, theirs_runs = [], []
    for _ in range(settings.psi_repeat):
        found, timing = _ours(server, client, pool)
        if found != expected:
            raise RuntimeError(f"our path found {len(found)} members, expected {len(expected)}")
        ours_runs.append(timing)
        step("comparison: ours")
        found, timing = _openmined(server_text, client_text, settings.openmined_fpr)
        if found != expected:
            raise RuntimeError(f"OpenMined PSI found {len(found)} members, expected {len(expected)}")
        theirs_runs.append(timing)
        step("comparison: OpenMined PSI")
    ours, theirs = _medians(ours_runs), _medians(theirs_runs)
    ratio = _median_ratio([run["seconds"] for run in ours_runs], [run["seconds"] for run in theirs_runs])
    return {
        "ours_seconds": ours["seconds"],
        "openmined_seconds": theirs["seconds"],
        "ours_vs_openmined": ratio,
        "ours": ours,
        "openmined": theirs,
        "intersection_size": len(expected),
    }


def _machine() -> dict[str, Any]:
    """What the figures were measured on."""
    version = ctypes.CDLL(pysodium.sodium._name).sodium_version_string
    version.restype = ctypes.c_char_p
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "libsodium": version().decode(),
    }


def run_crypto_bench(settings: CryptoBenchSettings, step: Step | None = None) -> dict[str, Any]:
    """Run the crypto benchmark and return its figures (the `crypto` section of `healthpsi bench --json`)."""
    report = step or (lambda _: None)
    machine = _machine()
    before = busy_seconds()
    with ProcessPoolExecutor(max_workers=settings.workers) as pool:
        _warm(pool, settings.workers)
        report("worker processes started")
        rates = _rates(settings, pool, report)
        comparison = _comparison(settings, pool, report)
    foreign = other_cpu_share(before, busy_seconds())
    machine["load_average_end"] = list(os.getloadavg())
    machine["other_processes_cpu_share"] = foreign
    two_core = {
        "blind_evaluate": _median_ratio(
            rates["blind_evaluate_two_cores_per_s"], rates["blind_evaluate_per_s"]
        ),
        "evaluate": _median_ratio(rates["evaluate_two_cores_per_s"], rates["evaluate_per_s"]),
    }
    return {
        "blind_evaluate_vs_raw": _median_ratio(rates["blind_evaluate_per_s"], rates["raw_scalar_mult_per_s"]),
        "evaluate_vs_raw": _median_ratio(rates["evaluate_per_s"], rates["raw_hash_to_group_mult_per_s"]),
        "two_core_speedup": min(two_core.values()),
        "two_core_speedup_by_operation": two_core,
        "ours_vs_openmined": comparison.pop("ours_vs_openmined"),
        **{name: statistics.median(values) for name, values in rates.items()},
        "rate_ranges": {name: [min(values), max(values)] for name, values in rates.items()},
        **comparison,
        "settings": asdict(settings),
        "machine": machine,
        "notes": {
            "raw baselines": "libsodium through ctypes, preallocated buffers, precomputed inputs; the "
            "hash-to-group baseline maps precomputed 64-byte strings (no SHA-512 expansion)",
            "one core": "in-process, no executor; two cores: a warm pool of two worker processes",
            "ratios": "median over repetitions of each repetition's ratio; rates: medians, with [min, max]",
            "two_core_speedup": "the smaller of the BlindEvaluate and Evaluate speedups",
            "other_processes_cpu_share": "share of the machine's CPU time that other processes used during "
            "the run; above a few percent the two-core and OpenMined figures understate ours",
            "ours": "VOPRF: index of tags over the server set, blinded query with a DLEQ proof generated "
            "and verified, on the two-process pool",
            "openmined": "openmined_psi with reveal_intersection, default data structure (GCS), "
            "single process as the library runs",
        },
    }
