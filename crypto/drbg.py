"""Randomness: a deterministic SHAKE256 generator for reproducible runs, and the system generator.

A simulation run seeds one `Drbg` from the scenario seed and gives each purpose its own child stream
(`rng.child("pki")`, `rng.child("node/carrier/...")`), so a run is reproducible byte for byte and the
streams do not depend on the order in which they are used.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol, runtime_checkable

from crypto.group import SCALAR_BYTES, UNIFORM_BYTES, scalar_from_uniform

_OUTPUT = b"\x00"
_CHILD = b"\x01"
_KEY_BYTES = 32
_ZERO = bytes(SCALAR_BYTES)


@runtime_checkable
class Rng(Protocol):
    """What every function that needs randomness accepts: a `Drbg` or a `SystemRng`."""

    def random_bytes(self, n: int) -> bytes:
        """Return n random bytes."""
        ...

    def child(self, label: str) -> Rng:
        """Return an independent generator for the purpose named by `label`."""
        ...

    def random_scalar(self) -> bytes:
        """Return a uniform nonzero ristretto255 scalar (32 bytes, little-endian)."""
        ...

    def random_int(self, bound: int) -> int:
        """Return a uniform integer in [0, bound)."""
        ...


class _Sampling:
    """Scalar and integer sampling on top of `random_bytes`."""

    __slots__ = ()

    def random_bytes(self, n: int) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def random_scalar(self) -> bytes:
        """Return a uniform nonzero ristretto255 scalar: 64 random bytes reduced modulo the group order."""
        while True:
            scalar = scalar_from_uniform(self.random_bytes(UNIFORM_BYTES))
            if scalar != _ZERO:
                return scalar

    def random_int(self, bound: int) -> int:
        """Return a uniform integer in [0, bound), by rejection sampling."""
        if bound <= 0:
            raise ValueError(f"random_int: bound must be positive, got {bound}")
        bits = (bound - 1).bit_length()
        if bits == 0:
            return 0
        nbytes = (bits + 7) // 8
        while True:
            value = int.from_bytes(self.random_bytes(nbytes), "big") >> (8 * nbytes - bits)
            if value < bound:
                return value


class Drbg(_Sampling):
    """Deterministic generator: output block i is SHAKE256(0x00 || key || i), the key from the seed."""

    __slots__ = ("_counter", "_key")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes | bytearray):
            raise TypeError(f"Drbg seed: expected bytes, got {type(seed).__name__}")
        self._key = hashlib.shake_256(b"healthpsi drbg v1" + bytes(seed)).digest(_KEY_BYTES)
        self._counter = 0

    @classmethod
    def _from_key(cls, key: bytes) -> Drbg:
        """A generator with the given key and a fresh counter."""
        rng = cls.__new__(cls)
        rng._key = key
        rng._counter = 0
        return rng

    def random_bytes(self, n: int) -> bytes:
        """Return the next n bytes of this stream."""
        if n < 0:
            raise ValueError(f"random_bytes: negative length {n}")
        block = hashlib.shake_256(_OUTPUT + self._key + self._counter.to_bytes(8, "big")).digest(n)
        self._counter += 1
        return block

    def child(self, label: str) -> Drbg:
        """Return the independent stream named `label`, a function of this stream's key and `label`."""
        return Drbg._from_key(hashlib.shake_256(_CHILD + self._key + label.encode()).digest(_KEY_BYTES))


class SystemRng(_Sampling):
    """The operating system's generator (os.urandom) behind the same interface as `Drbg`."""

    __slots__ = ()

    def random_bytes(self, n: int) -> bytes:
        """Return n bytes from os.urandom."""
        return os.urandom(n)

    def child(self, label: str) -> SystemRng:
        """Return a system generator (every system stream is independent)."""
        return SystemRng()


def default_rng(rng: Rng | None) -> Rng:
    """Return `rng`, or a `SystemRng` when it is None."""
    return SystemRng() if rng is None else rng
