"""Codes for new applications: the colour the latest epoch's features give under the active policy, signed
with the run's code-signing key (the epoch's claim set and code id), stored with the application."""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from coordinator.features import DATED_BY
from coordinator.issuance import ClaimContext, Signer, code_id, iso, sign_job
from coordinator.policy import DEFAULT_POLICY, Assessment, Policy
from coordinator.risk import load_scenario
from coordinator.sealing import storage_key
from coordinator.store import CodeFields, CodeStore
from crypto.codes import CODE_VALIDITY
from runctx.pki import PkiPaths

POLICY_FILE = Path("coordinator") / "policy.toml"
"""The run's active policy when present (else the default policy)."""
FEATURES_FILE = Path("coordinator") / "features.parquet"
GREEN = Assessment("green", (), None)


class Unavailable(RuntimeError):
    """The service cannot issue codes now (no finished epoch, a policy that is not the epoch's, a node
    down); the message says why."""


@dataclass(frozen=True)
class LatestEpoch:
    """The latest finished epoch: its id, window and the moment its codes were issued."""

    epoch: str
    as_of: dt.date
    window_days: int
    issued_at: dt.datetime
    policy_version: str


def latest_epoch(run_dir: Path) -> LatestEpoch:
    """The run's latest finished epoch (Unavailable before the first one finishes)."""
    with CodeStore(Path(run_dir) / "coordinator" / "codes.sqlite") as store:
        latest = store.latest_epoch()
    if latest is None:
        raise Unavailable(f"no epoch has finished yet; run: healthpsi coordinator epoch --run {run_dir} ...")
    epoch, result = latest
    return LatestEpoch(
        epoch=epoch,
        as_of=dt.date.fromisoformat(result["as_of"]),
        window_days=load_scenario(Path(run_dir)).window_days,
        issued_at=dt.datetime.fromisoformat(result["issued_at"].replace("Z", "+00:00")),
        policy_version=result["policy_version"],
    )


def with_declared_symptoms(features: dict[str, Any] | None, day: dt.date) -> dict[str, Any]:
    """A subject's features with symptoms declared on `day` (`declared_symptoms` and its date)."""
    out = dict(features or {})
    out["declared_symptoms"] = 1
    out[DATED_BY["declared_symptoms"]] = day
    return out


class Issuer:
    """Signs codes for one run; keeps the latest features (reloaded when the file changes) in memory."""

    def __init__(self, run_dir: Path) -> None:
        self.run = Path(run_dir)
        paths = PkiPaths(self.run)
        self.signer = Signer.load(paths)
        self.secret = storage_key(self.run)
        self._lock = threading.Lock()
        self._features: tuple[int, dict[str, dict[str, Any]]] | None = None
        self._policy: tuple[tuple[Path, int], Policy] | None = None

    def policy(self, epoch: LatestEpoch) -> Policy:
        """The active policy, which must be the one the latest epoch applied (Unavailable otherwise)."""
        path = self.run / POLICY_FILE
        source = path if path.exists() else DEFAULT_POLICY
        stamp = (source, os.stat(source).st_mtime_ns)
        with self._lock:  # parsed again only when the file changes
            if self._policy is None or self._policy[0] != stamp:
                self._policy = (stamp, Policy.load(source))
            policy = self._policy[1]
        if policy.version != epoch.policy_version:
            raise Unavailable(
                f"the active policy is {policy.version} but the latest epoch applied {epoch.policy_version}; "
                "run an epoch under the active policy first"
            )
        return policy

    def _features_of(self, subject_id: str) -> dict[str, Any] | None:
        """The subject's row of the latest features.parquet, or None (no exposure on record)."""
        path = self.run / FEATURES_FILE
        stamp = os.stat(path).st_mtime_ns
        with self._lock:
            if self._features is None or self._features[0] != stamp:
                rows = pq.read_table(path).to_pylist()
                self._features = (stamp, {row["subject_id"]: row for row in rows})
            return self._features[1].get(subject_id)

    def assess(self, epoch: LatestEpoch, subject_id: str, symptoms: bool = False) -> Assessment:
        """The subject's colour as the latest epoch assessed its features (at the epoch's issue date); with
        `symptoms`, the application's own declaration counts too, dated that day (the SYMPTOMS rule)."""
        features = self._features_of(subject_id)
        day = epoch.issued_at.date()
        if symptoms:
            features = with_declared_symptoms(features, day)
        if features is None:
            return GREEN
        return self.policy(epoch).assess(features, day)

    def code(
        self, epoch: LatestEpoch, subject_id: str, name: str, now: dt.datetime, symptoms: bool = False
    ) -> CodeFields:
        """A signed code for the subject in the latest epoch, issued now, valid for a day (`symptoms`: the
        application declared some)."""
        assessment = self.assess(epoch, subject_id, symptoms)
        policy = self.policy(epoch)
        holder = code_id(self.secret, epoch.epoch, subject_id)
        context = ClaimContext(self.secret, epoch.epoch, self.signer.issuer, policy.version, now)
        claims = context.claims(holder, subject_id, name, assessment.color, assessment.until)
        (payload,) = sign_job(self.signer.key_pem, self.signer.kid, [claims])
        return (
            holder, subject_id, assessment.color, assessment.reasons, iso(now), iso(now + CODE_VALIDITY),
            payload, epoch.epoch,
        )
