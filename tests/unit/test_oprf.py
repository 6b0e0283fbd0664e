"""RFC 9497 OPRF/VOPRF (ristretto255-SHA512): the RFC's vectors byte for byte, batches, proofs, bad input."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto import group, oprf
from crypto.drbg import Drbg
from crypto.errors import CryptoError, InvalidElement, InvalidScalar, ProofError
from crypto.oprf import Mode

VECTORS = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "testdata"
    / "rfc9497"
    / "ristretto255-SHA512.json"
)


def _suites() -> list[dict[str, Any]]:
    """The vector suites for the modes implemented here (0 = OPRF, 1 = VOPRF)."""
    return [suite for suite in json.loads(VECTORS.read_text()) if suite["mode"] in (0, 1)]


def _cases() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(suite, vector) for every vector of modes 0 and 1."""
    return [(suite, vector) for suite in _suites() for vector in suite["vectors"]]


def _hexes(field: str) -> list[bytes]:
    """A vector field: comma-separated hex strings, one per batch entry."""
    return [bytes.fromhex(part) for part in field.split(",")]


def _case_id(case: tuple[dict[str, Any], dict[str, Any]]) -> str:
    suite, vector = case
    return f"mode{suite['mode']}-batch{vector['Batch']}-{vector['Input'][:8]}"


CASES = _cases()


def test_vectors_cover_both_modes_and_batches() -> None:
    assert {suite["mode"] for suite, _ in CASES} == {0, 1}
    assert any(vector["Batch"] > 1 and "Proof" in vector for _, vector in CASES)
    assert len(CASES) == 5


@pytest.mark.parametrize("suite", _suites(), ids=lambda s: f"mode{s['mode']}")
def test_derive_key_pair_and_context(suite: dict[str, Any]) -> None:
    mode = Mode(suite["mode"])
    sk, pk = oprf.derive_key_pair(bytes.fromhex(suite["seed"]), bytes.fromhex(suite["keyInfo"]), mode)
    assert sk.hex() == suite["skSm"]
    if "pkSm" in suite:
        assert pk.hex() == suite["pkSm"]
    assert pk == group.base_mult(sk)
    assert oprf.hash_to_group_dst(mode).hex() == suite["groupDST"]
    assert oprf.context_string(mode) == b"OPRFV1-" + bytes([mode]) + b"-ristretto255-SHA512"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_vector(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    suite, vector = case
    mode = Mode(suite["mode"])
    sk, pk = oprf.derive_key_pair(bytes.fromhex(suite["seed"]), bytes.fromhex(suite["keyInfo"]), mode)
    inputs, blinds = _hexes(vector["Input"]), _hexes(vector["Blind"])
    expected_blinded = _hexes(vector["BlindedElement"])
    expected_evaluated = _hexes(vector["EvaluationElement"])
    expected_outputs = _hexes(vector["Output"])
    assert len(inputs) == vector["Batch"]

    blinded = []
    for data, r in zip(inputs, blinds, strict=True):
        out_blind, element = oprf.blind(data, mode, blind=r)
        assert out_blind == r
        blinded.append(element)
    assert blinded == expected_blinded

    evaluated = [oprf.blind_evaluate(sk, element) for element in blinded]
    assert evaluated == expected_evaluated
    assert oprf.blind_evaluate_packed(sk, b"".join(blinded)) == b"".join(expected_evaluated)

    outputs = [oprf.finalize(x, r, e) for x, r, e in zip(inputs, blinds, evaluated, strict=True)]
    assert outputs == expected_outputs
    assert oprf.finalize_many(inputs, blinds, b"".join(evaluated)) == expected_outputs
    assert [oprf.evaluate(sk, x, mode) for x in inputs] == expected_outputs
    assert oprf.evaluate_many(sk, inputs, mode) == expected_outputs

    if mode is Mode.VOPRF:
        proof = oprf.generate_proof(sk, pk, blinded, evaluated, r=bytes.fromhex(vector["Proof"]["r"]))
        assert proof.hex() == vector["Proof"]["proof"]
        oprf.verify_proof(pk, blinded, evaluated, proof)
    else:
        assert "Proof" not in vector


def test_vectors_with_a_parallel_executor() -> None:
    suite = next(s for s in _suites() if s["mode"] == 1)
    vector = next(v for v in suite["vectors"] if v["Batch"] == 2)
    sk, pk = oprf.derive_key_pair(bytes.fromhex(suite["seed"]), bytes.fromhex(suite["keyInfo"]), Mode.VOPRF)
    blinded, evaluated = _hexes(vector["BlindedElement"]), _hexes(vector["EvaluationElement"])
    r = bytes.fromhex(vector["Proof"]["r"])
    with ThreadPoolExecutor(2) as pool:
        assert (
            oprf.generate_proof(sk, pk, blinded, evaluated, r=r, executor=pool).hex()
            == vector["Proof"]["proof"]
        )
        oprf.verify_proof(pk, blinded, evaluated, bytes.fromhex(vector["Proof"]["proof"]), executor=pool)


# --- batches ------------------------------------------------------------------------------------------------


def _batch(n: int, seed: bytes = b"batch") -> tuple[bytes, bytes, list[bytes]]:
    rng = Drbg(seed)
    sk, pk = oprf.generate_key_pair(rng.child("key"))
    return sk, pk, [f"cell-hour|{i}|2020-02-0{i % 9 + 1}T{i % 24:02d}".encode() for i in range(n)]


def test_batch_round_trip_matches_server_evaluate_across_chunks() -> None:
    sk, pk, inputs = _batch(600)  # > 2 chunks of 256
    blinds, packed = oprf.blind_many(inputs, Mode.VOPRF, rng=Drbg(b"blinds"))
    assert len(blinds) == len(inputs) and len(packed) == 32 * len(inputs)
    with ThreadPoolExecutor(2) as pool:
        evaluated = oprf.blind_evaluate_packed(sk, packed, executor=pool)
        assert evaluated == oprf.blind_evaluate_packed(sk, packed)
        direct = oprf.evaluate_many(sk, inputs, Mode.VOPRF, executor=pool)
        assert direct == oprf.evaluate_many(sk, inputs, Mode.VOPRF)
        blinded, elements = group.split_packed(packed), group.split_packed(evaluated)
        proof = oprf.generate_proof(sk, pk, blinded, elements, rng=Drbg(b"nonce"), executor=pool)
        oprf.verify_proof(pk, blinded, elements, proof, executor=pool)
    oprf.verify_proof(pk, blinded, elements, proof)
    assert oprf.finalize_many(inputs, blinds, evaluated) == direct
    assert len(set(direct)) == len(inputs)


def test_modes_and_keys_give_different_outputs() -> None:
    sk, _, inputs = _batch(3)
    other, _ = oprf.generate_key_pair(Drbg(b"other"))
    base = oprf.evaluate_many(sk, inputs, Mode.OPRF)
    assert base != oprf.evaluate_many(sk, inputs, Mode.VOPRF)
    assert base != oprf.evaluate_many(other, inputs, Mode.OPRF)


def test_blinding_is_reproducible_from_a_drbg_and_random_otherwise() -> None:
    _, _, inputs = _batch(4)
    assert oprf.blind_many(inputs, Mode.VOPRF, Drbg(b"s")) == oprf.blind_many(inputs, Mode.VOPRF, Drbg(b"s"))
    assert oprf.blind_many(inputs, Mode.VOPRF)[1] != oprf.blind_many(inputs, Mode.VOPRF)[1]
    assert oprf.generate_key_pair() != oprf.generate_key_pair()


def test_empty_batches() -> None:
    sk, _, _ = _batch(0)
    assert oprf.blind_evaluate_packed(sk, b"") == b""
    assert oprf.evaluate_many(sk, [], Mode.VOPRF) == []
    assert oprf.blind_many([], Mode.VOPRF) == ([], b"")
    assert oprf.finalize_many([], [], b"") == []


# --- proofs -------------------------------------------------------------------------------------------------


def _proved(n: int = 3) -> tuple[bytes, list[bytes], list[bytes], bytes]:
    sk, pk, inputs = _batch(n, b"proof")
    _, packed = oprf.blind_many(inputs, Mode.VOPRF, Drbg(b"b"))
    blinded = group.split_packed(packed)
    evaluated = group.split_packed(oprf.blind_evaluate_packed(sk, packed))
    return pk, blinded, evaluated, oprf.generate_proof(sk, pk, blinded, evaluated, rng=Drbg(b"r"))


PROVED = _proved()


def test_proof_rejects_wrong_key_elements_or_order() -> None:
    pk, blinded, evaluated, proof = PROVED
    _, other_pk = oprf.generate_key_pair(Drbg(b"other"))
    with pytest.raises(ProofError, match="does not verify"):
        oprf.verify_proof(other_pk, blinded, evaluated, proof)
    with pytest.raises(ProofError):
        oprf.verify_proof(pk, blinded, evaluated[::-1], proof)
    with pytest.raises(ProofError):
        oprf.verify_proof(pk, blinded[:2], evaluated[:2], proof)
    with pytest.raises(ProofError):
        oprf.verify_proof(pk, blinded, [*evaluated[:2], blinded[2]], proof)
    with pytest.raises(ProofError, match="3 blinded and 2 evaluated"):
        oprf.verify_proof(pk, blinded, evaluated[:2], proof)
    with pytest.raises(ProofError, match="0 blinded"):
        oprf.verify_proof(pk, [], [], proof)


def test_proof_from_the_wrong_key_does_not_verify() -> None:
    pk, blinded, evaluated, _ = PROVED
    sk2, pk2 = oprf.generate_key_pair(Drbg(b"k2"))
    forged = oprf.generate_proof(sk2, pk2, blinded, evaluated, rng=Drbg(b"r"))
    with pytest.raises(ProofError):
        oprf.verify_proof(pk, blinded, evaluated, forged)


def test_proof_rejects_non_canonical_scalars() -> None:
    pk, blinded, evaluated, proof = PROVED
    c = int.from_bytes(proof[:32], "little")
    bumped = (c + group.ORDER).to_bytes(32, "little") + proof[32:]  # same value mod the order
    with pytest.raises(ProofError, match="non-canonical"):
        oprf.verify_proof(pk, blinded, evaluated, bumped)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bit=st.integers(min_value=0, max_value=8 * oprf.PROOF_BYTES - 1))
def test_any_bit_flip_in_a_proof_fails(bit: int) -> None:
    pk, blinded, evaluated, proof = PROVED
    flipped = bytearray(proof)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProofError):
        oprf.verify_proof(pk, blinded, evaluated, bytes(flipped))


@settings(max_examples=100, deadline=None)
@given(
    which=st.sampled_from(["pk", "blinded", "evaluated"]), index=st.integers(0, 2), bit=st.integers(0, 255)
)
def test_any_bit_flip_in_the_statement_fails(which: str, index: int, bit: int) -> None:
    pk, blinded, evaluated, proof = PROVED
    statement = {"pk": [pk], "blinded": list(blinded), "evaluated": list(evaluated)}
    target = statement[which]
    flipped = bytearray(target[index % len(target)])
    flipped[bit // 8] ^= 1 << (bit % 8)
    target[index % len(target)] = bytes(flipped)
    with pytest.raises((ProofError, InvalidElement)):
        oprf.verify_proof(statement["pk"][0], statement["blinded"], statement["evaluated"], proof)


@settings(max_examples=200, deadline=None)
@given(proof=st.one_of(st.binary(max_size=80), st.none(), st.integers(), st.text(max_size=70)))
def test_garbage_proofs_raise_proof_error(proof: Any) -> None:
    pk, blinded, evaluated, _ = PROVED
    with pytest.raises(ProofError):
        oprf.verify_proof(pk, blinded, evaluated, proof)


# --- bad input ----------------------------------------------------------------------------------------------

KEY = _batch(1)[0]
GARBAGE = st.one_of(
    st.binary(max_size=70),
    st.none(),
    st.integers(),
    st.text(max_size=40),
    st.lists(st.integers(0, 255), max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=70))
def test_garbage_blinded_element_raises_invalid_element(data: bytes) -> None:
    if len(data) == 32 and group.element_problem(data) is None:
        assert oprf.blind_evaluate(KEY, data) == group.scalar_mult(KEY, data)
        return
    with pytest.raises(InvalidElement):
        oprf.blind_evaluate(KEY, data)


@settings(max_examples=200, deadline=None)
@given(value=GARBAGE)
def test_garbage_of_any_type_raises_the_typed_error(value: Any) -> None:
    with pytest.raises(InvalidElement):
        oprf.blind_evaluate(
            KEY, value if not isinstance(value, bytes) or len(value) != 32 else group.IDENTITY
        )
    with pytest.raises(InvalidElement):
        oprf.blind_evaluate_packed(KEY, value if not isinstance(value, bytes) else value + b"\x01" * 33)
    with pytest.raises(CryptoError):
        oprf.finalize(
            b"x", KEY, value if not isinstance(value, bytes) or len(value) != 32 else group.IDENTITY
        )
    with pytest.raises(InvalidScalar):
        oprf.blind_evaluate(
            value if not isinstance(value, bytes) or len(value) != 32 else bytes(32), group.GENERATOR
        )


@settings(max_examples=100, deadline=None)
@given(count=st.integers(1, 40), bad=st.integers(0, 39), data=st.binary(min_size=32, max_size=32))
def test_bad_element_in_a_packed_batch_is_named(count: int, bad: int, data: bytes) -> None:
    bad %= count
    sk, _, inputs = _batch(count)
    blinded = group.split_packed(oprf.blind_many(inputs, Mode.VOPRF, Drbg(b"x"))[1])
    if group.element_problem(data) is None:
        data = group.IDENTITY
    blinded[bad] = data
    with pytest.raises(InvalidElement, match=f"element {bad}:"):
        oprf.blind_evaluate_packed(sk, b"".join(blinded))


def test_bad_element_in_a_later_chunk_is_numbered_across_the_batch() -> None:
    sk, _, inputs = _batch(700)
    blinded = group.split_packed(oprf.blind_many(inputs, Mode.VOPRF, Drbg(b"x"))[1])
    blinded[650] = group.IDENTITY
    with ThreadPoolExecutor(2) as pool, pytest.raises(InvalidElement, match="element 650: the identity"):
        oprf.blind_evaluate_packed(sk, b"".join(blinded), executor=pool)
    with pytest.raises(InvalidElement, match="element 650: the identity"):
        oprf.finalize_many(inputs, [KEY] * 700, b"".join(blinded))


def test_error_messages_name_the_problem() -> None:
    non_canonical = (2**255 - 19 + 2).to_bytes(32, "little")  # the field element 2, unreduced
    with pytest.raises(InvalidElement, match="expected 32 bytes, got 31"):
        oprf.blind_evaluate(KEY, bytes(31))
    with pytest.raises(InvalidElement, match="identity"):
        oprf.blind_evaluate(KEY, bytes(32))
    with pytest.raises(InvalidElement, match="non-canonical"):
        oprf.blind_evaluate(KEY, non_canonical)
    with pytest.raises(InvalidElement, match="negative field element"):
        oprf.blind_evaluate(KEY, b"\x01" + bytes(31))
    with pytest.raises(InvalidElement, match="not a multiple of 32"):
        oprf.blind_evaluate_packed(KEY, bytes(33))
    with pytest.raises(InvalidScalar, match="zero scalar"):
        oprf.blind_evaluate(bytes(32), group.GENERATOR)
    with pytest.raises(InvalidScalar, match="not below the group order"):
        oprf.blind_evaluate(group.ORDER.to_bytes(32, "little"), group.GENERATOR)
    with pytest.raises(InvalidScalar, match="blind"):
        oprf.blind(b"x", Mode.OPRF, blind=bytes(32))
    with pytest.raises(CryptoError, match="unknown OPRF mode"):
        oprf.evaluate(KEY, b"x", 2)  # type: ignore[arg-type]
    with pytest.raises(CryptoError, match="longer than"):
        oprf.evaluate(KEY, bytes(65536), Mode.VOPRF)
    with pytest.raises(CryptoError, match="input 1: expected bytes"):
        oprf.evaluate_many(KEY, [b"a", "b"], Mode.VOPRF)  # type: ignore[list-item]
    with pytest.raises(CryptoError, match="seed"):
        oprf.derive_key_pair(bytes(31), b"", Mode.VOPRF)
    with pytest.raises(CryptoError, match="2 inputs, 1 blinds"):
        oprf.finalize_many([b"a", b"b"], [KEY], bytes(64))
