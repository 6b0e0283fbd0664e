"""How a run's files are written: whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, private: bool = False, durable: bool = True) -> None:
    """Write a file atomically (temporary file, fsync, rename); private files get mode 0600.

    `durable=False` skips the fsync, for files whose digest is checked before they are used again or that
    are rewritten on every start (after a crash they may be incomplete, never half-replaced).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: readers of a data directory pass it over
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:  # a buffered write loops until every byte is written
        fh.write(data)
        fh.flush()
        if durable:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


WITNESS_DIR = Path("audit") / "heads"
"""The auditor's inbox for signed log heads, relative to the run directory."""


def witness_dir(run_dir: Path, log: str) -> Path:
    """Where the witness keeps the heads of one log: `log` is "coordinator" or "nodes/<agency>"."""
    return Path(run_dir) / WITNESS_DIR / log
