"""The run's PKI bootstrap: RUN/pki written from the scenario's seed and date when there is one."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, time
from pathlib import Path

from crypto.drbg import Drbg, Rng
from crypto.pki import PkiPaths, create_pki
from proto.tokens import AGENCIES


class KeysError(Exception):
    """`keys init` cannot proceed; the message says why."""


def scenario_rng(run_dir: Path) -> tuple[Rng | None, datetime | None]:
    """The PKI's randomness and reference time from RUN/scenario.json (seed, as_of), or (None, None)."""
    path = run_dir / "scenario.json"
    if not path.exists():
        return None, None
    try:
        scenario = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeysError(f"{path}: cannot read the scenario ({exc})") from None
    if not isinstance(scenario, dict):
        raise KeysError(f"{path}: expected a JSON object")
    seed, as_of = scenario.get("seed"), scenario.get("as_of")
    rng = None
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise KeysError(f"{path}: seed must be an integer in [0, 2^64), got {seed!r}")
        rng = Drbg(b"healthpsi" + seed.to_bytes(8, "big")).child("pki")
    now = None
    if as_of is not None:
        try:
            now = datetime.combine(date.fromisoformat(as_of), time(), UTC)
        except (TypeError, ValueError):
            raise KeysError(f"{path}: as_of must be a YYYY-MM-DD date, got {as_of!r}") from None
    return rng, now


def init_keys(run_dir: Path, *, force: bool = False) -> PkiPaths:
    """Write RUN/pki (deterministic from the scenario's seed when there is one); refuse to overwrite
    an existing PKI unless `force`."""
    paths = PkiPaths(run_dir)
    if paths.exists():
        if not force:
            raise KeysError(f"{paths.pki_dir} already exists; use --force to replace it")
        shutil.rmtree(paths.pki_dir)
    rng, now = scenario_rng(run_dir)
    create_pki(paths, AGENCIES, rng=rng, now=now)
    return paths
