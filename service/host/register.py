"""The police population register as the host app reads it: the host app is the police agency's, so it looks
its own register up directly (no PSI needed between a party and its own data). Rows the store would count as
malformed (a bad id number, a missing name) are passed over, as the police node passes over them."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from proto import ids

COLUMNS = ("subject_id", "name", "household_id", "phone")


class RegisterError(RuntimeError):
    """The register file cannot be read (missing, not Parquet, a column missing)."""


@dataclass(frozen=True)
class Register:
    """Who is registered: names by id number, id numbers by phone, and the registered households."""

    names: dict[str, frozenset[str]]
    by_phone: dict[str, tuple[str, ...]]
    households: frozenset[str]

    def agrees(self, subject_id: str, name: str) -> bool:
        """Whether the register holds a person with this id number under this name."""
        return name in self.names.get(subject_id, ())

    def holders(self, phone: str) -> tuple[str, ...]:
        """The id numbers registered with this phone (one, as a rule)."""
        return self.by_phone.get(phone, ())


def read_register(path: Path) -> Register:
    """The register in `path` (RUN/data/police/population.parquet), its malformed rows passed over."""
    try:
        table = pq.read_table(path, columns=list(COLUMNS))
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise RegisterError(f"{path}: cannot read the population register ({exc})") from None
    valid, _ = ids.parse(table["subject_id"])
    named = pc.fill_null(pc.is_valid(table["name"]), False).to_numpy(zero_copy_only=False)
    table = table.filter(pa.array(np.asarray(valid, dtype=bool) & named))
    names: defaultdict[str, set[str]] = defaultdict(set)
    phones: defaultdict[str, list[str]] = defaultdict(list)
    columns = [table[c].to_pylist() for c in COLUMNS]
    for subject_id, name, _, phone in zip(*columns, strict=True):
        names[subject_id].add(name)
        if phone and subject_id not in phones[phone]:
            phones[phone].append(subject_id)
    households = frozenset(h for h in columns[2] if h)
    return Register(
        {k: frozenset(v) for k, v in names.items()}, {k: tuple(v) for k, v in phones.items()}, households
    )


class RegisterCache:
    """One worker's copy of the register, read again when the file changes (by size and modification time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._register: Register | None = None

    def get(self) -> Register:
        """The register as the file now holds it."""
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise RegisterError(f"{self.path}: no population register ({exc.strerror})") from None
        stamp = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if self._register is None or stamp != self._stamp:
                self._register, self._stamp = read_register(self.path), stamp
            return self._register
