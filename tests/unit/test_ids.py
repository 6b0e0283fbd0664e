"""Subject ids: the MOD 11-2 check character, validation, and the simulation's id generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import ids
from simulation.city import make_ids

KNOWN = "11010519491231002X"  # the textbook example of a resident id


def test_known_check_character() -> None:
    assert ids.check_char(KNOWN[:17]) == "X"
    assert ids.is_valid(KNOWN)
    assert (
        ids.check_char("41120219900101001")
        == ids.CHECK_CHARS[
            sum(int(d) * int(w) for d, w in zip("41120219900101001", ids.WEIGHTS, strict=True)) % 11
        ]
    )


@pytest.mark.parametrize(
    "bad",
    [
        "110105194912310021",  # wrong check character
        "11010519491231002",  # too short
        "11010519491231002XX",  # too long
        "1101051949123100ZX",  # a letter in the body
        "１１０１０５１９４９１２３１００２X",  # full-width digits
        "",
        None,
        110105194912310020,
    ],
)
def test_invalid_ids(bad: object) -> None:
    assert not ids.is_valid(bad)  # type: ignore[arg-type]


def test_check_char_rejects_bad_body() -> None:
    with pytest.raises(ValueError, match="17 digits"):
        ids.check_char("12345")


def test_vectorised_matches_scalar() -> None:
    rng = np.random.default_rng(1)
    bodies = rng.integers(10**16, 10**17 - 1, 2000)
    vec = ids.from_bodies(bodies)
    assert list(vec) == [b_str + ids.check_char(b_str) for b_str in (f"{b:017d}" for b in bodies)]
    mask = ids.valid_mask(pd.Series([*vec[:5], KNOWN, "110105194912310021", None, "abc"]))
    assert mask.tolist() == [True] * 6 + [False, False, False]


_ID_LIKE = st.one_of(
    st.integers(0, 10**17 - 1).map(lambda b: ids.from_int(b)),
    st.text(alphabet="0123456789X", min_size=16, max_size=19),
    st.text(max_size=20),
    st.none(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_ID_LIKE, max_size=40))
def test_parse_matches_the_scalar_functions(values: list[str | None]) -> None:
    expect_valid = [ids.is_valid(v) for v in values]
    expect_bodies = [ids.to_int(v) if ok else 0 for v, ok in zip(values, expect_valid, strict=True)]
    for given_as in (pd.Series(values, dtype=object), pa.array(values, pa.string())):
        valid, bodies = ids.parse(given_as)
        assert valid.tolist() == expect_valid
        assert bodies.tolist() == expect_bodies
    sliced = pa.chunked_array([pa.array(["x", *values], pa.string()).slice(1)])
    assert ids.parse(sliced)[0].tolist() == expect_valid


def test_int_round_trip() -> None:
    assert ids.from_int(ids.to_int(KNOWN)) == KNOWN
    assert ids.to_int(KNOWN) == 11010519491231002
    with pytest.raises(ValueError):
        ids.to_int("110105194912310021")


def test_generated_ids_are_unique_valid_and_encode_region_birth_and_sex() -> None:
    rng = np.random.default_rng(5)
    n = 50_000
    prefix = rng.choice([411202, 411203, 420102], n)
    birth = rng.integers(-3000, 3000, n)  # days since 1970, crowded so that many people share a birth date
    sex = rng.integers(0, 2, n).astype(np.int8)
    bodies = make_ids(prefix, birth, sex, rng)
    subject = ids.from_bodies(bodies)
    assert len(set(subject)) == n
    assert ids.valid_mask(pd.Series(subject)).all()
    text = pd.Series(subject)
    assert (text.str[:6].astype(int).to_numpy() == prefix).all()
    ymd = np.datetime_as_string(birth.astype("datetime64[D]"), unit="D")
    assert (text.str[6:14].to_numpy() == np.char.replace(ymd, "-", "")).all()
    seq = text.str[14:17].astype(int).to_numpy()
    assert ((seq % 2 == 1) == (sex == 1)).all()
    assert seq.min() >= 1 and seq.max() <= 999
