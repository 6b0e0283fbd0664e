"""Transmission between people at the same place in the same clock hour (cells and venues alike)."""

from __future__ import annotations

import numpy as np

from simulation.epidemic import MARKET, shared_hours

# person 0 is infectious (relative infectiousness 1), person 3 half as infectious; 1, 2 and 4 are susceptible
REL = np.array([1.0, 0.0, 0.0, 0.5, 0.0])


def visits(*rows: tuple[int, int, int, int]) -> tuple[np.ndarray, ...]:
    """(place, start minute, end minute, person) rows as the column arrays shared_hours takes."""
    return tuple(np.array(col, dtype=np.int64) for col in zip(*rows, strict=True))


def test_hazard_is_beta_times_own_minutes_times_the_infectious_minutes() -> None:
    # place 7: person 0 from 10:00 to 11:30; person 1 from 10:30 to 11:00 (30 min with 60 infectious
    # minutes in hour 10); person 2 from 11:00 to 12:00 (60 min with 30 infectious minutes in hour 11);
    # person 4 at place 8, where nobody infectious is
    place, start, end, person = visits((7, 600, 690, 0), (7, 630, 660, 1), (7, 660, 720, 2), (8, 600, 660, 4))
    infectious = np.array([True, False, False, False])
    beta = np.full(4, 0.1)
    exposure, contacts = shared_hours(
        place, start, end, person, REL, infectious, ~infectious, beta, 10, MARKET
    )
    assert exposure.person.tolist() == [1, 2]
    expected = [1 - np.exp(-0.1 * 0.5 * 1.0), 1 - np.exp(-0.1 * 1.0 * 0.5)]
    assert np.allclose(exposure.prob, expected)
    assert exposure.infector.tolist() == [0, 0]
    assert exposure.time.tolist() == [10 * 60 + 30, 11 * 60 + 30]  # the middle of the hour shared
    assert contacts.tolist() == [[0, 1, MARKET, 1], [0, 2, MARKET, 1]]


def test_pressures_add_and_the_longest_present_leads() -> None:
    # both infectious people in hour 10 at place 2: pressure 1.0 * 60/60 + 0.5 * 20/60; person 0 leads
    place, start, end, person = visits((2, 600, 660, 0), (2, 600, 620, 3), (2, 600, 660, 1))
    infectious = np.array([True, True, False])
    beta = np.full(3, 0.2)
    exposure, contacts = shared_hours(
        place, start, end, person, REL, infectious, ~infectious, beta, 5, MARKET
    )
    assert exposure.person.tolist() == [1]
    assert np.allclose(exposure.prob, [1 - np.exp(-0.2 * 1.0 * (1.0 + 0.5 / 3))])
    assert contacts.tolist() == [[0, 1, MARKET, 1]]


def test_no_infectious_row_means_no_exposure() -> None:
    place, start, end, person = visits((1, 0, 60, 1), (1, 0, 60, 2))
    none = np.zeros(2, dtype=bool)
    exposure, contacts = shared_hours(place, start, end, person, REL, none, ~none, np.ones(2), 3, MARKET)
    assert len(exposure.person) == 0 and contacts.shape == (0, 4)
