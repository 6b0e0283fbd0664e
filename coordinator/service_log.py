"""The code service's audit log: what the service issues between epochs — applications, their identity
checks over PSI and the codes they led to — bound the way an epoch binds its codes, in a chained log signed
with the coordinator's identity key (`RUN/coordinator/service-audit.jsonl`, heads witnessed in
`RUN/audit/heads/coordinator-service/`).

It is a log of its own rather than entries in the epoch's `audit.jsonl`: the service runs in several worker
processes at once, next to epochs run by another process, and `AuditLog` has one writer per file; and a
seeded run's epoch log stays byte for byte what a re-run of its scenario writes. Service workers append one
at a time under an exclusive lock on `service-audit.lock`, each append reopening the log so that it
continues the chain the others left.

Entries (each with `epoch`: the epoch whose features coloured the codes, or an identity check's label):

- `evaluate`, `index_streamed`: an identity check's query, as an epoch logs its own (`coordinator.matching`);
- `applications_recorded`: one micro-batch of applications, each with the digest of its stored row, a MAC
  of the identity token it declared (under the coordinator's storage key: identity tokens are guessable,
  so the log carries no plain digest of one), the check that asked it, and the digest of the code's line
  as `CodeStore.code_lines` gives it (`new`: issued by this application, not one the subject held);
- `appeal_filed`: a citizen's appeal against a code, with the digest of its row as filed (every field but
  its status);
- `appeal_decided`: an operator's decision on an appeal (`upheld` or `rejected`) and who took it;
- `head`: signed by the coordinator's identity key, at least every `HEAD_SECONDS`, when a worker stops, and
  after each appeal decision.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from coordinator.store import Appeal, Application, CodeFields, reasons_json
from crypto.auditlog import AuditLog
from crypto.pki import load_identity_key
from runctx.files import witness_dir
from runctx.pki import PkiPaths

SERVICE_LOG = Path("coordinator") / "service-audit.jsonl"
"""The service's audit log, relative to the run directory."""
SERVICE_WITNESS = "coordinator-service"
"""The witness directory of the service's log (under RUN/audit/heads/)."""
RECORDED = "applications_recorded"
"""The entry kind binding a batch of applications and their codes."""
APPEAL_FILED = "appeal_filed"
"""The entry kind binding an appeal as a citizen filed it."""
APPEAL_DECIDED = "appeal_decided"
"""The entry kind binding an operator's decision on an appeal."""
HEAD_SECONDS = 60.0
"""A worker signs a head at least this often while it appends (and when it stops)."""
TOKEN_MAC_CONTEXT = b"healthpsi service identity token\x00"


def code_line(code: CodeFields) -> str:
    """A code's line as `CodeStore.code_lines` reads it back from the store (every field, payload whole)."""
    code_id, subject_id, color, reasons, issued_at, expires_at, payload, _ = code
    listed = reasons_json(tuple(reasons))
    return f"{code_id}|{subject_id}|{color}|{listed}|{issued_at}|{expires_at}|{payload}\n"


def line_digest(line: str) -> str:
    """SHA-256 (hex) of one code line."""
    return hashlib.sha256(line.encode()).hexdigest()


def application_digest(application: Application) -> str:
    """SHA-256 (hex) of an application row, every field, in canonical JSON."""
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(application).items()}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def appeal_digest(appeal: Appeal) -> str:
    """SHA-256 (hex) of an appeal as filed: every field but its status (which a decision changes), in
    canonical JSON."""
    fields = {k: v for k, v in vars(appeal).items() if k != "status"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def token_mac(storage_key: bytes, token: str) -> str:
    """HMAC-SHA256 (hex) of an identity token under the coordinator's storage key: the auditor, who holds
    that key to open the sealed query openings, can match it; a reader of the log alone cannot."""
    return hmac.digest(storage_key, TOKEN_MAC_CONTEXT + token.encode(), hashlib.sha256).hex()


class ServiceLog:
    """Appends the service's entries to `RUN/coordinator/service-audit.jsonl`, from any number of worker
    processes (an exclusive file lock around each append), and signs heads."""

    def __init__(self, run_dir: Path) -> None:
        run = Path(run_dir)
        self.path = run / SERVICE_LOG
        self.lock_path = self.path.with_suffix(".lock")
        self.witness = witness_dir(run, SERVICE_WITNESS)
        self.key = load_identity_key(PkiPaths(run).coordinator_identity_key)
        self._thread_lock = threading.Lock()
        self._unsigned = 0
        self._last_head = time.monotonic()

    @contextlib.contextmanager
    def _log(self) -> Iterator[AuditLog]:
        """The log, reopened under the exclusive lock (so it continues whatever another worker appended),
        and synced to disk once before the lock is released."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with AuditLog(self.path, fsync=False, witness=self.witness) as log:
                    yield log
                with open(self.path, "rb") as written:
                    os.fsync(written.fileno())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Append entries together (synced once), and a signed head when the last one is `HEAD_SECONDS`
        old."""
        if not entries:
            return
        with self._log() as log:
            for kind, data in entries:
                log.append(kind, data)
            self._unsigned += len(entries)
            if time.monotonic() - self._last_head >= HEAD_SECONDS:
                self._head(log, str(entries[-1][1].get("epoch", "")))

    def sign_head(self, epoch: str) -> None:
        """Close what this worker appended with a signed head (nothing when it appended nothing since)."""
        if self._unsigned:
            with self._log() as log:
                self._head(log, epoch)

    def _head(self, log: AuditLog, epoch: str) -> None:
        log.sign_head(self.key, epoch.split("/")[0], {"entries": self._unsigned})
        self._unsigned = 0
        self._last_head = time.monotonic()
