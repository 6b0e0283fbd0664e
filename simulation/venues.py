"""Venues with a code at their gate (一小区一码) and the check-ins scanned there; hosts' reverse declarations.

Venues: a residential compound for every household (households of a home cell grouped into compounds of
at most `COMPOUND_HOUSEHOLDS`), markets (one per `PERSONS_PER_MARKET` residents of a county, at busy
cells), a hospital and a station in each county (the city's own hospital and station cells), and a school
at each cell where pupils study. A venue id starts with its kind (`proto.tokens.venue_kind`).

Check-ins, per day: residents with a phone scan their compound's gate on the way home in the evening (most
without a `leave` time: a gate scan records entry only), some visit a market of their county, a few a
hospital, pupils scan their school in the morning. Declarations (房东/单位反向申报): landlords declare the
members of rented households (`RENTED_SHARE` of households), employers the staff of a share of workplaces.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulation.city import ROLE_SCHOOL, ROLE_WORK, City

COMPOUND_HOUSEHOLDS = 300
PERSONS_PER_MARKET = 2000
GATE_SCAN = 0.8
"""Share of residents with a phone who scan their compound's gate on a given day."""
GATE_WITHOUT_LEAVE = 0.85
MARKET_VISIT = 0.12
MARKET_WITHOUT_LEAVE = 0.3
HOSPITAL_VISIT = 0.004
ILL_HOSPITAL_VISIT = 0.3
"""Chance per day that someone out with symptoms, not yet reported, goes to hospital (a fever clinic)."""
HOSPITAL_WITHOUT_LEAVE = 0.2
SCHOOL_WITHOUT_LEAVE = 0.6
RENTED_SHARE = 0.15
"""Share of resident households renting their home (their landlord declares them)."""
DECLARING_EMPLOYERS = 0.3
"""Share of workplaces whose employer declares its staff."""
WORKPLACE_STAFF = 40


@dataclass
class Venues:
    """The city's venues (the rows of venues.parquet) and each resident's compound (index, -1 for none)."""

    frame: pd.DataFrame  # venue_id, kind, name, region_code, cell_id
    compound_of: np.ndarray
    markets_by_region: dict[int, np.ndarray]
    hospital_of_region: dict[int, int]
    school_at_cell: dict[int, int]


def build_venues(city: City, codes: list[str], names: list[str], rng: np.random.Generator) -> Venues:
    """The venues of the city's counties (`codes` and `names` of every region, by region index)."""
    people, cells = city.people, city.cells
    rows: list[tuple[str, str, str, str, int]] = []
    counters: dict[tuple[str, str], int] = {}

    def add(kind: str, region: int, cell: int, label: str) -> int:
        key = (kind, codes[region])
        counters[key] = counters.get(key, 0) + 1
        n = counters[key]
        rows.append(
            (
                f"{kind}-{codes[region]}-{n:04d}",
                kind,
                f"{names[region]}{label}{n}",
                codes[region],
                int(cells.ids[cell]),
            )
        )
        return len(rows) - 1

    residents = np.nonzero((people.household >= 0) & (people.home >= 0))[0]
    compound_of = np.full(people.n, -1, dtype=np.int64)
    household_cell = people.home[people.household_start]
    resident_households = np.nonzero(household_cell >= 0)[0]
    order = resident_households[np.argsort(household_cell[resident_households], kind="stable")]
    compound_of_household = np.full(len(household_cell), -1, dtype=np.int64)
    for cell in np.unique(household_cell[order]):
        members = order[household_cell[order] == cell]
        for k in range(0, len(members), COMPOUND_HOUSEHOLDS):
            region = int(cells.region[cell])
            compound_of_household[members[k : k + COMPOUND_HOUSEHOLDS]] = add(
                "compound", region, int(cell), "小区"
            )
    compound_of[residents] = compound_of_household[people.household[residents]]

    counties = np.unique(people.region[residents])
    markets: dict[int, np.ndarray] = {}
    hospitals: dict[int, int] = {}
    for region in counties:
        n_res = int((people.region[residents] == region).sum())
        n_markets = max(1, n_res // PERSONS_PER_MARKET)
        at = cells.sample_in_regions(np.full(n_markets, region), rng)
        markets[int(region)] = np.array([add("market", int(region), int(c), "市场") for c in at])
        hospitals[int(region)] = add("hospital", int(region), int(cells.hospital[region]), "医院")
        add("station", int(region), int(cells.station[region]), "车站")
    schools: dict[int, int] = {}
    pupils = residents[(people.role[residents] == ROLE_SCHOOL) & (people.work[residents] >= 0)]
    for cell in np.unique(people.work[pupils]):
        schools[int(cell)] = add("school", int(cells.region[cell]), int(cell), "学校")
    frame = pd.DataFrame(rows, columns=["venue_id", "kind", "name", "region_code", "cell_id"])
    return Venues(frame, compound_of, markets, hospitals, schools)


@dataclass(frozen=True)
class Visits:
    """One day's check-ins as arrays: person index, venue index, minutes after midnight at the gate, and the
    minute of leaving (-1 when not scanned out: one hour assumed)."""

    person: np.ndarray
    venue: np.ndarray
    at: np.ndarray
    leave: np.ndarray

    def minutes(self) -> tuple[np.ndarray, np.ndarray]:
        """Each visit's [start, end) in minutes after midnight (an hour when no leave time was scanned)."""
        return self.at, np.where(self.leave >= 0, self.leave, self.at + 60)


def day_visits(
    city: City, venues: Venues, day: dt.date, absent: np.ndarray, ill: np.ndarray, rng: np.random.Generator
) -> Visits:
    """One day's check-ins; `absent` marks people who do not go out that day (isolated, in hospital as
    cases, travelling), `ill` those out with symptoms, who go to their county's hospital at
    `ILL_HOSPITAL_VISIT`."""
    people = city.people
    who = np.nonzero((venues.compound_of >= 0) & people.phone & ~absent)[0]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def visits(
        persons: np.ndarray, venue: np.ndarray, first: int, last: int, lo: int, hi: int, no_leave: float
    ) -> None:
        at = rng.integers(first, last, len(persons))
        length = rng.integers(lo, hi, len(persons))
        leave = np.where(rng.random(len(persons)) < no_leave, -1, at + length)
        parts.append((persons, venue, at, leave))

    gate = who[rng.random(len(who)) < GATE_SCAN]
    visits(gate, venues.compound_of[gate], 16 * 60, 22 * 60, 1, 5, GATE_WITHOUT_LEAVE)
    market = who[rng.random(len(who)) < MARKET_VISIT]
    if len(market):
        choice = np.array([rng.choice(venues.markets_by_region[int(r)]) for r in people.region[market]])
        visits(market, choice, 7 * 60, 19 * 60, 20, 90, MARKET_WITHOUT_LEAVE)
    visit_chance = np.where(ill[who], ILL_HOSPITAL_VISIT, HOSPITAL_VISIT)
    sick = who[rng.random(len(who)) < visit_chance]
    if len(sick):
        hospital = np.array([venues.hospital_of_region[int(r)] for r in people.region[sick]])
        visits(sick, hospital, 8 * 60, 16 * 60, 60, 240, HOSPITAL_WITHOUT_LEAVE)
    if day.weekday() < 5:
        pupils = who[
            (people.role[who] == ROLE_SCHOOL) & np.isin(people.work[who], list(venues.school_at_cell))
        ]
        school = np.array([venues.school_at_cell[int(c)] for c in people.work[pupils]], dtype=np.int64)
        visits(pupils, school, 7 * 60, 8 * 60, 480, 540, SCHOOL_WITHOUT_LEAVE)
    return Visits(*(np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(4)))


def checkin_frame(city: City, venues: Venues, day: dt.date, visits: Visits) -> pd.DataFrame:
    """The day's visits as check-in rows (subject_id, venue_id, at, leave — NaT when not scanned out),
    sorted by time."""
    ids = venues.frame["venue_id"].to_numpy(dtype=object)
    base = np.datetime64(day, "m")
    frame = pd.DataFrame(
        {
            "subject_id": city.people.subject_id[visits.person].astype(str),
            "venue_id": ids[visits.venue],
            "at": (base + visits.at.astype("timedelta64[m]")).astype("datetime64[s]"),
            "leave": np.where(
                visits.leave >= 0, base + visits.leave.astype("timedelta64[m]"), np.datetime64("NaT")
            ).astype("datetime64[s]"),
        }
    )
    return frame.sort_values(["at", "venue_id", "subject_id"], kind="stable").reset_index(drop=True)


def declarations(city: City, window_start: dt.date, rng: np.random.Generator) -> pd.DataFrame:
    """Hosts' declarations (place_id, subject_id, role, from_date, to_date, declared_by), sorted by
    from_date: every member of a rented household declared by its landlord, the staff of declaring
    employers' workplaces declared by the employer (a place id names the dwelling or the workplace)."""
    people = city.people
    residents = np.nonzero((people.household >= 0) & (people.home >= 0))[0]
    start = np.datetime64(window_start, "D")
    frames = []

    households = np.unique(people.household[residents])
    rented = households[rng.random(len(households)) < RENTED_SHARE]
    tenants = residents[np.isin(people.household[residents], rented)]
    landlord = rng.choice(residents, len(rented))
    landlord_of = dict(zip(rented.tolist(), landlord.tolist(), strict=True))
    since = dict(zip(rented.tolist(), rng.integers(0, 60, len(rented)).tolist(), strict=True))
    length = dict(zip(rented.tolist(), rng.integers(180, 730, len(rented)).tolist(), strict=True))
    h = people.household[tenants]
    frames.append(
        pd.DataFrame(
            {
                "place_id": ["dwelling-" + str(people.household_id[x]) for x in h],
                "subject_id": people.subject_id[tenants].astype(str),
                "role": "tenant",
                "from_date": start - np.array([since[x] for x in h]).astype("timedelta64[D]"),
                "length": np.array([length[x] for x in h]),
                "declared_by": people.subject_id[
                    np.array([landlord_of[x] for x in h], dtype=np.int64)
                ].astype(str),
            }
        )
    )

    staff = residents[(people.role[residents] == ROLE_WORK) & (people.work[residents] >= 0)]
    order = staff[np.argsort(people.work[staff], kind="stable")]
    cell = people.work[order]
    rank = np.arange(len(order)) - np.searchsorted(cell, cell)  # position within the work cell
    workplace = cell.astype(np.int64) * 100_000 + rank // WORKPLACE_STAFF
    places, which = np.unique(workplace, return_inverse=True)
    declaring = rng.random(len(places)) < DECLARING_EMPLOYERS
    employer = rng.choice(residents, len(places))
    keep = declaring[which]
    w = which[keep]
    frames.append(
        pd.DataFrame(
            {
                "place_id": [f"workplace-{city.cells.ids[p // 100_000]}-{p % 100_000}" for p in places[w]],
                "subject_id": people.subject_id[order[keep]].astype(str),
                "role": "employee",
                "from_date": start - rng.integers(0, 60, len(w)).astype("timedelta64[D]"),
                "length": rng.integers(365, 1460, len(w)),
                "declared_by": people.subject_id[employer[w]].astype(str),
            }
        )
    )
    frame = pd.concat(frames, ignore_index=True)
    first = frame["from_date"].to_numpy().astype("datetime64[D]")
    frame["from_date"] = first
    frame["to_date"] = first + frame.pop("length").to_numpy().astype("timedelta64[D]")
    frame = frame[["place_id", "subject_id", "role", "from_date", "to_date", "declared_by"]]
    return frame.sort_values(["from_date", "place_id", "subject_id"], kind="stable").reset_index(drop=True)
