"""Per-partition query budgets in evaluated elements, persisted in SQLite (WAL), with idempotent retries.

Every Evaluate is charged its element count against its partition's cap. A request that carries an
idempotency key is stored with its response, so a retry with the same key and the same blinded inputs
gets the same response and is not charged again.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proto import tokens
from proto.errors import FailedPrecondition, ResourceExhausted
from runctx.sqlite import immediate

DEFAULT_FRACTION = 8
"""A partition's default cap is 1/DEFAULT_FRACTION of its entries (distinct tokens)..."""
DEFAULT_FLOOR = 4
"""...but at least this many elements (or every entry of a partition that has fewer), so that a small
partition still answers the few tokens a case justifies."""
CONFIG_FILE = "budget.conf"
"""In RUN/nodes/<agency>/: the operator's caps, one SCOPE=N per line (`#` comments), written by
`healthpsi node init --budget`; `--budget` options of `node serve` override it."""

_SPEC = re.compile(r"^(?:(?P<scope>[A-Za-z0-9_.@-]+|\*)=)?(?P<cap>[0-9]+)$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget (
    partition_id TEXT PRIMARY KEY,
    total INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS budget_epoch (
    partition_id TEXT PRIMARY KEY,
    epoch TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    partition_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    inputs_digest BLOB NOT NULL,
    count INTEGER NOT NULL,
    response BLOB NOT NULL,
    PRIMARY KEY (partition_id, idempotency_key)
);
"""


class BudgetSpecError(ValueError):
    """A budget specification that cannot be parsed."""


def default_cap(partition_id: str, entry_count: int) -> int:
    """The default cap, the same for day partitions (per key) and static ones (per epoch): an eighth of
    the partition's entries, at least `DEFAULT_FLOOR` (never more than the entries)."""
    return max(entry_count // DEFAULT_FRACTION, min(DEFAULT_FLOOR, entry_count))


@dataclass(frozen=True)
class BudgetPolicy:
    """Caps per partition: explicit overrides by scope, else `default_cap`.

    A scope is a partition id (`cell-hour@2020-02-01`), a token kind (`household`), a dataset (`stays`),
    `day` or `static` (every day or static partition), or `*` (every partition); the most specific scope
    that matches wins.
    """

    overrides: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: Sequence[str]) -> BudgetPolicy:
        """Parse `N` (every partition) or `SCOPE=N` items, e.g. `["stays=2000", "identity=500"]`."""
        overrides: dict[str, int] = {}
        for spec in specs:
            for item in filter(None, (part.strip() for part in spec.split(","))):
                match = _SPEC.match(item)
                if not match:
                    raise BudgetSpecError(
                        f"budget {item!r}: expected N or SCOPE=N (SCOPE: partition id, "
                        "token kind, dataset, 'day', 'static' or '*')"
                    )
                overrides[match["scope"] or "*"] = int(match["cap"])
        return cls(overrides)

    @classmethod
    def read(cls, path: Path) -> BudgetPolicy:
        """The caps in an operator's budget file (`CONFIG_FILE`; none when it does not exist)."""
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            return cls()
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        try:
            return cls.parse([line for line in lines if line])
        except BudgetSpecError as exc:
            raise BudgetSpecError(f"{path}: {exc}") from None

    def over(self, base: BudgetPolicy) -> BudgetPolicy:
        """These caps, with `base`'s for the scopes these do not set."""
        return BudgetPolicy({**base.overrides, **self.overrides})

    def lines(self) -> str:
        """The caps as a budget file's text (`read` parses it back)."""
        return "".join(f"{scope}={cap}\n" for scope, cap in sorted(self.overrides.items()))

    def cap(self, partition_id: str, entry_count: int) -> int:
        """The cap of a partition with `entry_count` index entries."""
        kind, day = tokens.parse_partition_id(partition_id)
        scopes = (partition_id, kind, tokens.KINDS[kind][1], "static" if day is None else "day", "*")
        for scope in scopes:
            if scope in self.overrides:
                return self.overrides[scope]
        return default_cap(partition_id, entry_count)


def config_path(run_dir: Path, agency: str) -> Path:
    """RUN/nodes/<agency>/budget.conf: the node operator's caps."""
    return Path(run_dir) / "nodes" / agency / CONFIG_FILE


def write_budget(run_dir: Path, agency: str, policy: BudgetPolicy) -> Path:
    """Store the operator's caps for a node (`config_path`), replacing earlier ones; return the file."""
    path = config_path(run_dir, agency)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# query caps of this node, SCOPE=N (see healthpsi node serve --help)\n" + policy.lines())
    return path


@dataclass(frozen=True)
class Budget:
    """A partition's cap and use, in evaluated elements."""

    total: int
    used: int

    @property
    def left(self) -> int:
        """Elements that may still be evaluated."""
        return max(0, self.total - self.used)


def _exhausted(partition_id: str, budget: Budget, count: int) -> ResourceExhausted:
    """The refusal of a request for `count` elements that do not fit, stating cap and use."""
    return ResourceExhausted(
        f"budget exhausted on partition {partition_id}: cap {budget.total} elements, "
        f"used {budget.used}, {budget.left} left, this request asks for {count}"
    )


class BudgetLedger:
    """Budgets and stored Evaluate responses in one SQLite database (WAL mode), safe across threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def set_total(self, partition_id: str, total: int) -> Budget:
        """Set a partition's cap (keeping what it has used) and return its budget."""
        with self._lock:
            self._db.execute(
                "INSERT INTO budget (partition_id, total) VALUES (?, ?) "
                "ON CONFLICT(partition_id) DO UPDATE SET total = excluded.total",
                (partition_id, total),
            )
            return self._budget(partition_id)

    def _budget(self, partition_id: str) -> Budget:
        """Read a partition's budget (caller holds the lock)."""
        row = self._db.execute(
            "SELECT total, used FROM budget WHERE partition_id = ?", (partition_id,)
        ).fetchone()
        if row is None:
            raise KeyError(partition_id)
        return Budget(total=row[0], used=row[1])

    def budget(self, partition_id: str) -> Budget:
        """A partition's current budget."""
        with self._lock:
            return self._budget(partition_id)

    def replay(self, partition_id: str, idempotency_key: str, inputs_digest: bytes) -> bytes | None:
        """The stored response of an earlier request with this key, or None.

        Raises FailedPrecondition when the key was used for different blinded inputs.
        """
        if not idempotency_key:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT inputs_digest, response FROM requests WHERE partition_id = ? AND idempotency_key = ?",
                (partition_id, idempotency_key),
            ).fetchone()
        if row is None:
            return None
        if bytes(row[0]) != inputs_digest:
            raise FailedPrecondition(
                f"idempotency key {idempotency_key!r} was already used on partition {partition_id} "
                "for different blinded elements"
            )
        return bytes(row[1])

    def check(self, partition_id: str, count: int) -> Budget:
        """The budget if `count` more elements fit; else raise ResourceExhausted stating cap and use."""
        with self._lock:
            budget = self._budget(partition_id)
        if count > budget.left:
            raise _exhausted(partition_id, budget, count)
        return budget

    def commit(
        self,
        partition_id: str,
        idempotency_key: str,
        inputs_digest: bytes,
        count: int,
        respond: Callable[[int], bytes],
        record: Callable[[int], None] | None = None,
    ) -> bytes:
        """Charge `count` elements and store the response `respond(budget_left)`, atomically; return it.

        `record(budget_left)` (the audit entry of the charge) runs inside the transaction, before it commits:
        a crash can leave an entry whose charge did not commit, never a charge without its entry. Raises
        ResourceExhausted (nothing charged) when the elements no longer fit the cap.
        """
        with self._lock:
            with immediate(self._db):
                budget = self._budget(partition_id)
                if count > budget.left:
                    raise _exhausted(partition_id, budget, count)
                self._db.execute(
                    "UPDATE budget SET used = used + ? WHERE partition_id = ?", (count, partition_id)
                )
                response = respond(budget.left - count)
                if idempotency_key:
                    self._db.execute(
                        "INSERT INTO requests (partition_id, idempotency_key, inputs_digest, count, "
                        "response) VALUES (?, ?, ?, ?, ?)",
                        (partition_id, idempotency_key, inputs_digest, count, response),
                    )
                if record is not None:
                    record(budget.left - count)
            return response

    def epoch(self, partition_id: str) -> str | None:
        """The epoch a per-epoch budget is counting (None: it never started one)."""
        with self._lock:
            row = self._db.execute(
                "SELECT epoch FROM budget_epoch WHERE partition_id = ?", (partition_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def start_epoch(self, partition_id: str, epoch: str) -> None:
        """Start a per-epoch budget's `epoch`: its use goes back to 0, atomically with the epoch's date."""
        with self._lock, immediate(self._db):
            self._db.execute("UPDATE budget SET used = 0 WHERE partition_id = ?", (partition_id,))
            self._db.execute(
                "INSERT INTO budget_epoch (partition_id, epoch) VALUES (?, ?) "
                "ON CONFLICT(partition_id) DO UPDATE SET epoch = excluded.epoch",
                (partition_id, epoch),
            )

    def forget_responses(self, partition_id: str) -> int:
        """Delete a partition's stored responses (its key is gone), keeping its budget; return how many."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM requests WHERE partition_id = ?", (partition_id,))
            return cursor.rowcount

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
