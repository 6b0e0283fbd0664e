"""RFC 9497 OPRF and VOPRF, suite ristretto255-SHA512, with batched DLEQ proofs and parallel batch evaluation.

The batch functions split their work into chunks and map top-level worker functions (sk and packed bytes
in, packed bytes out) over the `concurrent.futures.Executor` the caller passes; None runs in-process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from enum import IntEnum
from typing import Any

from crypto import group
from crypto.drbg import Rng, default_rng
from crypto.errors import CryptoError, InvalidElement, InvalidScalar, ProofError

SUITE_ID = b"ristretto255-SHA512"
OUTPUT_BYTES = 64
PROOF_BYTES = 2 * group.SCALAR_BYTES
SEED_BYTES = 32
MAX_INPUT_BYTES = 65535
MAX_PROOF_BATCH = 65536
"""RFC 9497 numbers composite terms with a 2-byte index, so one proof covers at most this many elements."""

_E = group.ELEMENT_BYTES
_ELEMENT_LEN = _E.to_bytes(2, "big")
_FINALIZE = b"Finalize"
_sha512 = hashlib.sha512


class Mode(IntEnum):
    """RFC 9497 protocol variants implemented here (healthpsi itself always uses VOPRF)."""

    OPRF = 0
    VOPRF = 1


def context_string(mode: Mode) -> bytes:
    """RFC 9497 contextString: "OPRFV1-" || I2OSP(mode, 1) || "-" || "ristretto255-SHA512"."""
    return b"OPRFV1-" + bytes([_mode(mode)]) + b"-" + SUITE_ID


def _mode(mode: int) -> Mode:
    """Return `mode` as a Mode, or raise CryptoError."""
    try:
        return Mode(mode)
    except ValueError:
        raise CryptoError(f"unknown OPRF mode {mode!r} (supported: 0 = OPRF, 1 = VOPRF)") from None


def hash_to_group_dst(mode: Mode) -> bytes:
    """The HashToGroup domain separation tag for `mode`."""
    return b"HashToGroup-" + context_string(mode)


def _hash_to_scalar_dst(mode: Mode) -> bytes:
    """The HashToScalar domain separation tag for `mode`."""
    return b"HashToScalar-" + context_string(mode)


def _check_input(data: object, what: str = "input") -> bytes:
    """Return a private input as bytes, or raise CryptoError if it is not bytes or longer than 65535 bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CryptoError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_INPUT_BYTES:
        raise CryptoError(f"{what}: {len(data)} bytes, longer than the {MAX_INPUT_BYTES} RFC 9497 allows")
    return data


def _check_inputs(inputs: Sequence[bytes]) -> list[bytes]:
    """Return the inputs as a list of bytes, or raise CryptoError naming the first bad one."""
    items = list(inputs)
    if all(type(x) is bytes for x in items) and (not items or max(map(len, items)) <= MAX_INPUT_BYTES):
        return items
    return [_check_input(x, f"input {i}") for i, x in enumerate(items)]


def _finalize_hash(data: bytes, element: bytes) -> bytes:
    """Hash(I2OSP(len(input), 2) || input || I2OSP(32, 2) || element || "Finalize")."""
    return _sha512(len(data).to_bytes(2, "big") + data + _ELEMENT_LEN + element + _FINALIZE).digest()


# --- keys ---------------------------------------------------------------------------------------------------


def derive_key_pair(seed: bytes, info: bytes, mode: Mode) -> tuple[bytes, bytes]:
    """RFC 9497 DeriveKeyPair: the key pair (sk scalar, pk element) determined by a 32-byte seed and info."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise CryptoError(f"DeriveKeyPair seed: expected {SEED_BYTES} bytes")
    info = _check_input(info, "DeriveKeyPair info")
    derive_input = seed + len(info).to_bytes(2, "big") + info
    dst = b"DeriveKeyPair" + context_string(mode)
    for counter in range(256):
        sk = group.hash_to_scalar(derive_input + bytes([counter]), dst)
        if sk != bytes(group.SCALAR_BYTES):
            return sk, group.base_mult(sk)
    raise CryptoError("DeriveKeyPair: no nonzero scalar after 256 attempts")  # pragma: no cover


def generate_key_pair(rng: Rng | None = None) -> tuple[bytes, bytes]:
    """A fresh key pair (sk scalar, pk element) from `rng` (the system generator when None)."""
    sk = default_rng(rng).random_scalar()
    return sk, group.base_mult(sk)


# --- single-element protocol steps --------------------------------------------------------------------------


def blind(
    input: bytes, mode: Mode, rng: Rng | None = None, blind: bytes | None = None
) -> tuple[bytes, bytes]:
    """RFC 9497 Blind: (blind scalar, blinded element); `blind` fixes the scalar, else `rng` draws it."""
    data = _check_input(input)
    r = default_rng(rng).random_scalar() if blind is None else group.validate_scalar(blind, "blind")
    return r, group.hash_to_group_mult([r], [data], hash_to_group_dst(mode))


def blind_evaluate(sk: bytes, blinded: bytes) -> bytes:
    """RFC 9497 BlindEvaluate: sk·B for a client's blinded element B (validated: canonical, not identity)."""
    sk = group.validate_scalar(sk, "private key")
    return group.scalar_mult(sk, group.validate_element(blinded, "blinded element"))


def finalize(input: bytes, blind: bytes, evaluated: bytes) -> bytes:
    """RFC 9497 Finalize: the 64-byte PRF output from the input, its blind and the evaluated element."""
    data = _check_input(input)
    inverse = group.scalar_invert(group.validate_scalar(blind, "blind"))
    return _finalize_hash(
        data, group.scalar_mult(inverse, group.validate_element(evaluated, "evaluated element"))
    )


def evaluate(sk: bytes, input: bytes, mode: Mode) -> bytes:
    """RFC 9497 server-side Evaluate: the 64-byte PRF output of `input` under `sk`, without blinding."""
    return evaluate_many(sk, [input], mode)[0]


# --- batches, spread over an executor -----------------------------------------------------------------------

_MIN_CHUNK = 256
_MAX_CHUNK = 8192
_TARGET_CHUNKS = 32


def _chunk_ranges(n: int) -> list[tuple[int, int]]:
    """Split n items into contiguous chunks of 256 to 8192 items, about 32 of them for mid-sized batches."""
    size = min(_MAX_CHUNK, max(_MIN_CHUNK, -(-n // _TARGET_CHUNKS)))
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def _run(executor: Executor | None, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Run fn over argument tuples, in-process when there is no executor or one call, else on the executor."""
    if executor is None or len(calls) <= 1:
        return [fn(*args) for args in calls]
    futures = [executor.submit(fn, *args) for args in calls]
    return [future.result() for future in futures]


def _blind_evaluate_chunk(sk: bytes, packed: bytes, first_index: int) -> bytes:
    """Worker: sk·B for each blinded element of a packed chunk (numbered from first_index in errors)."""
    return group.scalar_mult_packed(sk, packed, first_index)


def _evaluate_chunk(sk: bytes, mode: int, inputs: list[bytes]) -> bytes:
    """Worker: the 64-byte Evaluate outputs of a chunk of inputs, packed."""
    packed = group.hash_to_group_mult([sk] * len(inputs), inputs, hash_to_group_dst(Mode(mode)))
    finalize_hash = _finalize_hash
    return b"".join([finalize_hash(x, packed[i * _E : i * _E + _E]) for i, x in enumerate(inputs)])


def blind_evaluate_packed(sk: bytes, packed: bytes, executor: Executor | None = None) -> bytes:
    """BlindEvaluate every element of packed n·32 bytes, returning packed n·32 bytes; bad elements raise
    InvalidElement naming the first one found."""
    sk = group.validate_scalar(sk, "private key")
    packed = group.as_packed(packed, what="packed blinded elements")
    calls = [(sk, packed[a * _E : b * _E], a) for a, b in _chunk_ranges(len(packed) // _E)]
    return b"".join(_run(executor, _blind_evaluate_chunk, calls))


def evaluate_many(
    sk: bytes, inputs: Sequence[bytes], mode: Mode, executor: Executor | None = None
) -> list[bytes]:
    """Server-side Evaluate of every input (64-byte outputs, in order), spread over `executor`."""
    sk = group.validate_scalar(sk, "private key")
    mode = _mode(mode)
    items = _check_inputs(inputs)
    calls = [(sk, int(mode), items[a:b]) for a, b in _chunk_ranges(len(items))]
    packed = b"".join(_run(executor, _evaluate_chunk, calls))
    return [packed[i : i + OUTPUT_BYTES] for i in range(0, len(packed), OUTPUT_BYTES)]


def blind_many(inputs: Sequence[bytes], mode: Mode, rng: Rng | None = None) -> tuple[list[bytes], bytes]:
    """Blind every input with a fresh scalar from `rng`: (blinds, packed blinded elements)."""
    items = _check_inputs(inputs)
    source = default_rng(rng)
    blinds = [source.random_scalar() for _ in items]
    return blinds, group.hash_to_group_mult(blinds, items, hash_to_group_dst(mode))


def finalize_many(inputs: Sequence[bytes], blinds: Sequence[bytes], packed_evaluated: bytes) -> list[bytes]:
    """Finalize every input from its blind and the server's packed evaluated elements (64-byte outputs)."""
    items = _check_inputs(inputs)
    packed = group.as_packed(packed_evaluated, what="packed evaluated elements")
    count = len(packed) // _E
    if not len(items) == len(blinds) == count:
        raise CryptoError(
            f"finalize_many: {len(items)} inputs, {len(blinds)} blinds, {count} evaluated elements"
        )
    inverses = group.scalar_invert_many(blinds)
    unblinded = group.scalar_mult_each(inverses, packed)
    return [_finalize_hash(x, unblinded[i * _E : i * _E + _E]) for i, x in enumerate(items)]


# --- DLEQ proofs (RFC 9497 section 2.2) ---------------------------------------------------------------------

_PROOF_MODE = Mode.VOPRF


def _elements(values: Sequence[bytes], what: str) -> list[bytes]:
    """Return a sequence of 32-byte strings as a list of bytes, or raise InvalidElement."""
    if isinstance(values, bytes | bytearray | memoryview | str):
        raise InvalidElement(f"{what}: expected a sequence of elements, got {type(values).__name__}")
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, bytes | bytearray | memoryview) or len(value) != _E:
            size = len(value) if isinstance(value, bytes | bytearray | memoryview) else type(value).__name__
            raise InvalidElement(f"{what} {i}: expected {_E} bytes, got {size}")
        out.append(bytes(value))
    return out


def _composite_seed(pk: bytes) -> bytes:
    """seed = Hash(I2OSP(len(Bm), 2) || Bm || I2OSP(len(seedDST), 2) || seedDST), seedDST = "Seed-" || ctx."""
    seed_dst = b"Seed-" + context_string(_PROOF_MODE)
    return _sha512(_ELEMENT_LEN + pk + len(seed_dst).to_bytes(2, "big") + seed_dst).digest()


def _composite_chunk(seed: bytes, first_index: int, packed_c: bytes, packed_d: bytes, with_z: bool) -> bytes:
    """Worker: Σ d_i·C_i (and Σ d_i·D_i when with_z) over one chunk of composite terms, packed."""
    expand = group.Expander(_hash_to_scalar_dst(_PROOF_MODE))
    to_scalar = group.scalar_from_uniform
    prefix, tail = len(seed).to_bytes(2, "big") + seed, b"Composite"
    cs = [packed_c[i : i + _E] for i in range(0, len(packed_c), _E)]
    ds = [packed_d[i : i + _E] for i in range(0, len(packed_d), _E)]
    weights = [
        to_scalar(expand(prefix + index.to_bytes(2, "big") + _ELEMENT_LEN + c + _ELEMENT_LEN + d + tail))
        for index, c, d in zip(range(first_index, first_index + len(cs)), cs, ds, strict=True)
    ]
    m = group.linear_combination(weights, cs)
    return m + group.linear_combination(weights, ds) if with_z else m


def _composites(
    pk: bytes, cs: list[bytes], ds: list[bytes], with_z: bool, executor: Executor | None
) -> tuple[bytes, bytes | None]:
    """RFC 9497 ComputeComposites (with_z) or the M half of ComputeCompositesFast: (M, Z or None)."""
    if not cs or len(cs) != len(ds):
        raise ProofError(f"DLEQ proof over {len(cs)} blinded and {len(ds)} evaluated elements")
    if len(cs) > MAX_PROOF_BATCH:
        raise ProofError(f"DLEQ proof over {len(cs)} elements; RFC 9497 allows at most {MAX_PROOF_BATCH}")
    seed = _composite_seed(pk)
    calls = [(seed, a, b"".join(cs[a:b]), b"".join(ds[a:b]), with_z) for a, b in _chunk_ranges(len(cs))]
    m = z = group.IDENTITY
    for part in _run(executor, _composite_chunk, calls):
        m = group.element_add(m, part[:_E])
        if with_z:
            z = group.element_add(z, part[_E:])
    return m, (z if with_z else None)


def _challenge(pk: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes) -> bytes:
    """c = HashToScalar(len-prefixed Bm, M, Z, t2, t3 || "Challenge")."""
    transcript = b"".join(_ELEMENT_LEN + x for x in (pk, m, z, t2, t3)) + b"Challenge"
    return group.hash_to_scalar(transcript, _hash_to_scalar_dst(_PROOF_MODE))


def generate_proof(
    sk: bytes,
    pk: bytes,
    blinded: Sequence[bytes],
    evaluated: Sequence[bytes],
    rng: Rng | None = None,
    r: bytes | None = None,
    executor: Executor | None = None,
) -> bytes:
    """RFC 9497 GenerateProof: a batched DLEQ proof (c || s, 64 bytes) that evaluated[i] = sk·blinded[i] and
    pk = sk·G; `r` fixes the proof nonce (test vectors), else `rng` draws it."""
    sk = group.validate_scalar(sk, "private key")
    pk = group.validate_element(pk, "public key")
    cs, ds = _elements(blinded, "blinded element"), _elements(evaluated, "evaluated element")
    nonce = default_rng(rng).random_scalar() if r is None else group.validate_scalar(r, "proof nonce")
    m, _ = _composites(pk, cs, ds, False, executor)
    z = group.scalar_mult(sk, m)
    t2, t3 = group.base_mult(nonce), group.scalar_mult(nonce, m)
    c = _challenge(pk, m, z, t2, t3)
    return c + group.scalar_sub(nonce, group.scalar_mul(c, sk))


def verify_proof(
    pk: bytes,
    blinded: Sequence[bytes],
    evaluated: Sequence[bytes],
    proof: bytes,
    executor: Executor | None = None,
) -> None:
    """RFC 9497 VerifyProof: return if `proof` shows evaluated[i] = sk·blinded[i] for the sk behind `pk`, else
    raise ProofError (InvalidElement for a malformed key or element)."""
    pk = group.validate_element(pk, "public key")
    cs, ds = _elements(blinded, "blinded element"), _elements(evaluated, "evaluated element")
    if not isinstance(proof, bytes | bytearray | memoryview) or len(proof) != PROOF_BYTES:
        size = len(proof) if isinstance(proof, bytes | bytearray | memoryview) else type(proof).__name__
        raise ProofError(f"proof: expected {PROOF_BYTES} bytes, got {size}")
    proof = bytes(proof)
    try:
        c = group.validate_scalar(proof[: group.SCALAR_BYTES], "proof challenge c", nonzero=False)
        s = group.validate_scalar(proof[group.SCALAR_BYTES :], "proof response s", nonzero=False)
    except InvalidScalar as exc:
        raise ProofError(f"proof: {exc}") from None
    m, z = _composites(pk, cs, ds, True, executor)
    assert z is not None
    try:
        t2 = group.linear_combination([s, c], [group.GENERATOR, pk])
        t3 = group.linear_combination([s, c], [m, z])
    except InvalidElement:
        raise ProofError("proof does not verify (degenerate composite elements)") from None
    if _challenge(pk, m, z, t2, t3) != c:
        raise ProofError("proof does not verify")
