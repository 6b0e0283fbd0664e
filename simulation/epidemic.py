"""The epidemic: who infects whom, when; who falls ill, is reported and isolated; what investigations find.

Seeds are travellers from the high-risk origin, infected before they arrive. Each day, an infectious
person may infect household members at home, people sharing a cell at the same hours in workplaces,
schools, shops, restaurants and on the way (a probability per hour shared), people checked in at the same
market or hospital in the same hour, fellow passengers in the same carriage, roommates, and friends they
visit or who visit them. Infection is followed by an incubation
period; a symptomatic case is reported after a delay, becomes a confirmed or suspected case, and is
isolated in hospital. Some uninfected people with a fever are reported as suspected cases too.

An investigation lists the canonical tokens of a case's infectious period (computed with the nodes'
tokeniser from the case's true movements, tickets, hotel stays, household and the friends visited),
each remembered with probability `recall`; like an interview, it lists where the case went, not the
nights it spent at home or in its hotel (22:00 to 06:00) nor its hours in hospital once isolated.

How each infection happened is kept (`Epidemic.route`, counted by route in scenario.json); the
parameters and where their values come from are in `simulation.presets`. Every contact an infectious
person has in each setting is kept too, so that a run reports what contact tracing would have measured
(`Epidemic.observed`: secondary attack rates by setting, serial interval, onset to isolation).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from proto import tokenize
from simulation.city import City
from simulation.mobility import AWAY, DAY, HOME, HOSPITAL, HOTEL, SCHOOL, TRANSIT, VISIT, WORK, Stays
from simulation.presets import Preset
from simulation.transport import Travel
from simulation.venues import Visits

NEVER = np.int64(2**62)
CONFIRMED, SUSPECTED = 1, 2
ROUTES = ("seed", "household", "cell-hours", "visit", "carriage", "room-night", "market", "hospital")
"""How each infection happened (`Epidemic.route`): imported, or the route of transmission."""
SEED, HOUSEHOLD, CELL_HOURS, VISITED, CARRIAGE, ROOM_NIGHT, MARKET, HOSPITAL_VISIT = range(len(ROUTES))
BASE_KINDS = (HOME, HOTEL, AWAY)
"""Stay kinds at one's base: home, a hotel room, where one lodges away."""
NIGHT = (22 * 60, 6 * 60)
"""Night hours at one's base (22:00 to 06:00), which an investigation does not list as cell-hours."""
_HOUR = 60
MEDIUM_CLEAR_DAYS = 14
"""A medium-risk county is cleared after this many days without a new local case (as in 2020)."""
CLOSE_CELL_HOURS = 2
"""Shared cell-hours that make two people close contacts in public places (the 2020 rules' threshold)."""
SETTING_ORDER = (HOUSEHOLD, ROOM_NIGHT, VISITED, CARRIAGE, HOSPITAL_VISIT, MARKET, CELL_HOURS)
SCANNED = (HOSPITAL_VISIT, MARKET, CELL_HOURS)
"""Settings whose contacts come from records (venue check-ins, cell-hours), not from the index's interview."""
"""Settings from the closest: a contact met in several settings is counted in the first (as tracing does)."""


@dataclass
class Exposure:
    """Candidate infections: susceptible person, time, infector, probability."""

    person: np.ndarray
    time: np.ndarray
    infector: np.ndarray
    prob: np.ndarray


class Epidemic:
    """Per-person disease state, advanced one day at a time alongside everyone's movements."""

    def __init__(self, preset: Preset, city: City, travel: Travel, rng: np.random.Generator) -> None:
        """Seed infections among the travellers from the origin and draw the uninfected suspected cases."""
        self.preset, self.city, self.travel = preset, city, travel
        n = city.people.n
        self.infected_at = np.full(n, NEVER)
        self.infector = np.full(n, -1, dtype=np.int64)
        self.route = np.full(n, -1, dtype=np.int8)
        self.onset = np.full(n, NEVER)
        self.report = np.full(n, NEVER)
        self.inf_start = np.full(n, NEVER)
        self.inf_end = np.full(n, NEVER)
        self.rel = np.zeros(n)
        self.stay_home = np.zeros(n, dtype=bool)
        self.status = np.zeros(n, dtype=np.int8)
        self.tracked = np.zeros(n, dtype=bool)
        self.contacts: list[np.ndarray] = []  # rows (infector, person, route, shared hours), day by day
        self.venue_beta: dict[int, np.ndarray] = {}
        self.beta = preset.cell_hour_beta * 40.0 / preset.persons_per_cell
        self._seed(rng)
        self._suspects(rng)

    # natural history

    def _history(
        self,
        who: np.ndarray,
        infected_at: np.ndarray,
        rng: np.random.Generator,
        onset: np.ndarray | None = None,
        min_symptomatic: int = 0,
    ) -> None:
        """Draw incubation, symptoms, reporting delay and infectious period for newly infected people
        (at least `min_symptomatic` of them fall ill)."""
        p = self.preset
        n = len(who)
        incubation = np.clip(rng.lognormal(np.log(5.1), 0.42, n), 1.0, 14.0) * DAY
        if onset is not None:
            infected_at = onset - incubation.astype(np.int64)
        asym = rng.random(n) < p.asymptomatic
        short = min(min_symptomatic, n) - int((~asym).sum())
        if short > 0:
            asym[rng.choice(np.nonzero(asym)[0], size=short, replace=False)] = False
        sym_onset = infected_at + incubation.astype(np.int64) if onset is None else onset
        delay = ((rng.gamma(2.5, (p.report_delay_days - 0.5) / 2.5, n) + 0.5) * DAY).astype(np.int64)
        self.infected_at[who] = infected_at
        self.onset[who] = np.where(asym, NEVER, sym_onset)
        self.report[who] = np.where(asym, NEVER, sym_onset + delay)
        self.inf_start[who] = np.where(
            asym, infected_at + 2 * DAY, np.maximum(infected_at + DAY, sym_onset - 2 * DAY)
        )
        self.inf_end[who] = np.where(
            asym, infected_at + 9 * DAY, np.minimum(sym_onset + delay, sym_onset + 7 * DAY)
        )
        self.rel[who] = np.where(asym, 0.5, 1.0)
        self.stay_home[who] = ~asym & (rng.random(n) < p.stay_home_after_onset)
        self.status[who] = np.where(rng.random(n) < p.confirmed_share, CONFIRMED, SUSPECTED)
        self.tracked[who] = True

    def _seed(self, rng: np.random.Generator) -> None:
        """Infect some of the travellers from the origin before they arrive (onset around arrival).

        Each traveller is infected with probability `seed_attack` (the prevalence among them). The scenario
        is an outbreak, however small the city: at least `min_seeds` travellers arrive infected and fall ill
        (the index cases that are reported and investigated).
        """
        p = self.preset
        travellers, arrival = self.travel.from_origin, self.travel.arrival_minute
        n = len(travellers)
        count = min(n, max(p.min_seeds, int(rng.binomial(n, p.seed_attack))))
        hit = np.sort(rng.choice(n, size=count, replace=False))
        who, arrive = travellers[hit], arrival[hit]
        onset = arrive + rng.integers(-DAY // 2, 5 * DAY, len(who))
        self._history(who, np.zeros(len(who), dtype=np.int64), rng, onset=onset, min_symptomatic=p.min_seeds)
        self.route[who] = SEED
        self.report[who] = np.where(
            self.report[who] < NEVER, np.maximum(self.report[who], arrive + DAY), NEVER
        )
        self.inf_end[who] = np.minimum(
            self.inf_end[who], np.where(self.report[who] < NEVER, self.report[who], NEVER)
        )

    def _suspects(self, rng: np.random.Generator) -> None:
        """Uninfected people with a fever and an epidemiological link, reported as suspected cases.

        As the 2020 case definition required, a suspected case has a fever and a link to the epidemic:
        travellers from the origin fall ill with something else (flu season) at `suspect_rate_traveller`
        per day after their arrival; other residents are reported at the much lower `suspect_rate`.
        """
        p = self.preset
        n_days = p.sim_days
        travellers, arrival = self.travel.from_origin, self.travel.arrival_minute
        days_here = np.clip(n_days * DAY - arrival, 0, None) / DAY
        ill = rng.random(len(travellers)) < -np.expm1(-p.suspect_rate_traveller * days_here)
        t_who = travellers[ill]
        t_onset = arrival[ill] + (rng.random(len(t_who)) * (n_days * DAY - arrival[ill])).astype(np.int64)
        count = rng.poisson(p.suspect_rate * p.persons * n_days)
        r_who = rng.integers(0, self.city.people.n_residents, count)
        r_onset = rng.integers(0, (n_days - 1) * DAY, count)
        who, first = np.unique(np.concatenate([t_who, r_who]), return_index=True)
        onset = np.concatenate([t_onset, r_onset])[first]
        free = self.infected_at[who] == NEVER
        who, onset = who[free], onset[free]
        self.onset[who] = onset
        self.report[who] = onset + rng.integers(DAY // 2, 3 * DAY, len(who))
        self.inf_start[who] = onset - 2 * DAY
        self.status[who] = SUSPECTED
        self.tracked[who] = True

    # daily flags for movement

    def stay_in(self, d: int) -> np.ndarray:
        """People who stay at their base on day d: ill since before noon and not yet reported."""
        t0 = d * DAY
        return self.stay_home & (self.onset < t0 + DAY // 2) & (self.report > t0)

    def infectious(self, d: int) -> np.ndarray:
        """People infectious at some time on day d and not isolated before it."""
        t0 = d * DAY
        return (self.inf_start < t0 + DAY) & (self.inf_end > t0) & (self.infected_at < NEVER)

    # transmission

    def use_venues(self, kinds: np.ndarray) -> None:
        """Let the epidemic spread at the city's venues (`kinds`: each venue's kind): markets and hospitals,
        at the preset's per-hour rates; a gate scan is a moment in passing, and a school's pupils already
        share their school's cell-hours."""
        p = self.preset
        self.venue_beta = {
            MARKET: np.where(kinds == "market", p.market_hour_beta, 0.0),
            HOSPITAL_VISIT: np.where(kinds == "hospital", p.hospital_hour_beta, 0.0),
        }

    def step(
        self, d: int, stays: Stays, visits: Visits, base_kind: np.ndarray, rng: np.random.Generator
    ) -> int:
        """Infections of day d from its stays, venue check-ins, journeys, hotel nights and households; returns
        how many."""
        inf = self.infectious(d)
        if not inf.any():
            return 0
        susceptible = self.infected_at == NEVER
        shared = {CELL_HOURS: self._cell_hours(stays, inf, susceptible)}
        for setting, beta in self.venue_beta.items():
            shared[setting] = self._venue_hours(d, visits, beta, setting, inf, susceptible)
        parts = [
            self._household(d, inf, susceptible, base_kind, rng),
            *(exposure for exposure, _ in shared.values()),
            self._visits(stays, inf, susceptible, base_kind),
            self._carriages(d, inf, susceptible),
            self._rooms(d, inf, susceptible),
        ]
        routes = (HOUSEHOLD, *shared, VISITED, CARRIAGE, ROOM_NIGHT)
        self.contacts.extend(contacts for _, contacts in shared.values())
        for e, setting in zip(parts, routes, strict=True):
            if setting not in shared:
                once = np.ones(len(e.person), np.int64)
                rows = np.column_stack([e.infector, e.person, once * setting, once])
                self.contacts.append(rows.astype(np.int64))
        person = np.concatenate([e.person for e in parts])
        hit = rng.random(len(person)) < np.concatenate([e.prob for e in parts])
        if not hit.any():
            return 0
        time = np.concatenate([e.time for e in parts])[hit]
        infector = np.concatenate([e.infector for e in parts])[hit]
        route = np.concatenate(
            [np.full(len(e.person), r, np.int8) for e, r in zip(parts, routes, strict=True)]
        )
        route = route[hit]
        person = person[hit]
        order = np.lexsort((infector, time, person))
        person, time, infector, route = person[order], time[order], infector[order], route[order]
        first = np.r_[True, person[1:] != person[:-1]]
        person, time, infector, route = person[first], time[first], infector[first], route[first]
        self._history(person, time, rng)
        self.infector[person] = infector
        self.route[person] = route
        return len(person)

    def _household(
        self, d: int, inf: np.ndarray, sus: np.ndarray, base_kind: np.ndarray, rng: np.random.Generator
    ) -> Exposure:
        """Household members at home with an infectious member."""
        people = self.city.people
        src = np.nonzero(inf & (people.household >= 0) & (base_kind == HOME))[0]
        hh = people.household[src]
        size = people.household_size[hh]
        row, member = tokenize.explode(people.household_start[hh], size)
        infector = src[row]
        ok = (member != infector) & sus[member] & (base_kind[member] == HOME)
        rate = -np.log1p(-self.preset.household_per_day) * self.rel[infector]
        t = d * DAY + rng.integers(18 * _HOUR, 23 * _HOUR, len(member))
        return Exposure(member[ok], t[ok], infector[ok], (1 - np.exp(-rate))[ok])

    def _cell_hours(self, stays: Stays, inf: np.ndarray, sus: np.ndarray) -> tuple[Exposure, np.ndarray]:
        """People sharing a city cell, hour by hour, with infectious people, outside their bases; and the
        contacts, as rows (infector, person, CELL_HOURS, hours shared) with the cell-hour's leading source."""
        active = (stays.kind >= WORK) & (stays.cell < self.city.cells.n_grid)
        infectious = active & inf[stays.person]
        susceptible = active & sus[stays.person] & np.isin(stays.cell, stays.cell[infectious])
        kind = stays.kind
        beta = np.where(
            (kind == WORK) | (kind == SCHOOL), self.beta * self.preset.work_beta_factor, self.beta
        )
        beta = np.where(kind == TRANSIT, self.beta * 0.5, beta)
        spans = (stays.cell, stays.start, stays.end, stays.person.astype(np.int64))
        return shared_hours(
            *spans, self.rel, infectious, susceptible, beta, len(self.city.cells.ids), CELL_HOURS
        )

    def _venue_hours(
        self, d: int, visits: Visits, venue_beta: np.ndarray, route: int, inf: np.ndarray, sus: np.ndarray
    ) -> tuple[Exposure, np.ndarray]:
        """People checked in at a venue in the same clock hour as infectious people, where `venue_beta` (per
        venue) is not zero; and the contacts, as rows (infector, person, `route`, venue-hours shared)."""
        start, end = visits.minutes()
        beta = venue_beta[visits.venue]
        here = beta > 0
        spans = (visits.venue, start + d * DAY, end + d * DAY, visits.person)
        return shared_hours(
            *spans,
            self.rel,
            here & inf[visits.person],
            here & sus[visits.person],
            beta,
            len(venue_beta),
            route,
        )

    def _visits(self, stays: Stays, inf: np.ndarray, sus: np.ndarray, base_kind: np.ndarray) -> Exposure:
        """Visits between friends: the visitor and the host at home."""
        v = stays.select(stays.kind == VISIT)
        guest = v.person.astype(np.int64)
        host = self.city.people.friend[guest].astype(np.int64)
        at_home = base_kind[host] == HOME
        p = self.preset.visit_per_visit
        a = inf[guest] & sus[host] & at_home
        b = inf[host] & sus[guest] & at_home
        return Exposure(
            np.concatenate([host[a], guest[b]]),
            np.concatenate([v.start[a], v.start[b]]) + 30,
            np.concatenate([guest[a], host[b]]),
            np.concatenate([p * self.rel[guest[a]], p * self.rel[host[b]]]),
        )

    def _carriages(self, d: int, inf: np.ndarray, sus: np.ndarray) -> Exposure:
        """Fellow passengers in the same carriage of the same service."""
        j = self.travel.journeys
        today = np.nonzero(j.day == d)[0]
        frame = pd.DataFrame(
            {
                "person": j.person[today],
                "service": j.service[today],
                "car": j.carriage[today],
                "depart": j.depart[today],
            }
        )
        frame["rel"] = np.where(inf[frame.person], self.rel[frame.person], 0.0)
        frame["src"] = np.where(frame.rel > 0, frame.person, -1)
        grouped = frame.groupby(["service", "car"])
        frame["load"] = grouped["rel"].transform("sum")
        frame["infector"] = grouped["src"].transform("max")
        m = (frame.load > 0) & sus[frame.person] & (frame.infector != frame.person)
        f = frame[m]
        prob = 1 - (1 - self.preset.carriage_per_trip) ** f.load.to_numpy()
        return Exposure(
            f.person.to_numpy(np.int64), f.depart.to_numpy(np.int64) + 60, f.infector.to_numpy(np.int64), prob
        )

    def _rooms(self, d: int, inf: np.ndarray, sus: np.ndarray) -> Exposure:
        """Guests sharing a hotel room that night."""
        h = self.travel.hotel_stays
        tonight = np.nonzero((h.check_in <= d) & (h.check_in + h.nights > d))[0]
        frame = pd.DataFrame(
            {"person": h.person[tonight], "hotel": h.hotel[tonight], "room": h.room[tonight]}
        )
        frame["rel"] = np.where(inf[frame.person], self.rel[frame.person], 0.0)
        frame["src"] = np.where(frame.rel > 0, frame.person, -1)
        grouped = frame.groupby(["hotel", "room"])
        frame["load"] = grouped["rel"].transform("sum")
        frame["infector"] = grouped["src"].transform("max")
        f = frame[(frame.load > 0) & sus[frame.person]]
        prob = 1 - (1 - self.preset.room_per_night) ** f.load.to_numpy()
        return Exposure(
            f.person.to_numpy(np.int64),
            np.full(len(f), d * DAY + 22 * _HOUR, dtype=np.int64),
            f.infector.to_numpy(np.int64),
            prob,
        )

    # outputs

    def case_rows(self, n_days: int) -> np.ndarray:
        """Person indices of the cases reported in the window, in report order."""
        who = np.nonzero((self.report >= 0) & (self.report < n_days * DAY) & (self.status > 0))[0]
        return who[np.lexsort((who, self.onset[who], self.report[who]))]

    def observed(self, n_days: int) -> dict[str, object]:
        """What contact tracing of the window's cases would measure: secondary attack rates by setting and
        over all close contacts, the serial interval and the delay from onset to isolation.

        Index cases are the infected cases reported in the window whose infectious period ended within it
        (their transmission is complete). A close contact is a person who met an index case while it was
        infectious and was still susceptible: a household member at home, a roommate, a friend visited or
        visiting, a fellow passenger of the carriage, someone checked in at the same hospital or market in
        the same clock hour, or someone sharing at least `CLOSE_CELL_HOURS` cell-hours in public places;
        each contact is counted once per index, in its closest setting (`SETTING_ORDER`). A secondary case
        is a contact the index infected. The named close contacts are those an interview names (every
        setting but the `SCANNED` ones).
        """
        end = n_days * DAY
        index = self.case_rows(n_days)
        index = index[(self.infected_at[index] < NEVER) & (self.inf_end[index] <= end)]
        rows = np.concatenate([np.zeros((0, 4), dtype=np.int64), *self.contacts]).astype(np.int64)
        frame = pd.DataFrame(rows, columns=["index", "person", "route", "hours"])
        frame = frame[frame["index"].isin(index)]
        pairs = frame.groupby(["index", "person", "route"], as_index=False)["hours"].sum()
        pairs = pairs[(pairs["route"] != CELL_HOURS) | (pairs["hours"] >= CLOSE_CELL_HOURS)]
        rank = {route: i for i, route in enumerate(SETTING_ORDER)}
        pairs = pairs.assign(rank=pairs["route"].map(rank)).sort_values(["index", "person", "rank"])
        pairs = pairs.drop_duplicates(["index", "person"])
        secondary = self.infector[pairs["person"].to_numpy()] == pairs["index"].to_numpy()

        def rate(chosen: np.ndarray) -> dict[str, object]:
            n, k = int(chosen.sum()), int((chosen & secondary).sum())
            return {"contacts": n, "infected": k, "rate": round(k / n, 4) if n else None}

        attack = {ROUTES[r]: rate((pairs["route"] == r).to_numpy()) for r in SETTING_ORDER}
        attack["named close contacts"] = rate(~pairs["route"].isin(SCANNED).to_numpy())
        attack["all close contacts"] = rate(np.ones(len(pairs), dtype=bool))
        infectee = np.nonzero(np.isin(self.infector, index) & (self.onset < NEVER))[0]
        infectee = infectee[self.onset[self.infector[infectee]] < NEVER]
        serial = (self.onset[infectee] - self.onset[self.infector[infectee]]) / DAY
        reported = self.case_rows(n_days)
        reported = reported[(self.infected_at[reported] < NEVER) & (self.onset[reported] < NEVER)]
        isolation = (self.report[reported] - self.onset[reported]) / DAY

        def mean(values: np.ndarray, what: str) -> dict[str, object]:
            return {what: len(values), "mean": round(float(values.mean()), 2) if len(values) else None}

        return {
            "index_cases": len(index),
            "close_contacts_per_index": round(len(pairs) / len(index), 2) if len(index) else None,
            "secondary_attack_rate": attack,
            "serial_interval_days": mean(serial, "pairs"),
            "onset_to_isolation_days": mean(isolation, "cases"),
        }

    def medium_regions(self, cases: np.ndarray, region_of: np.ndarray) -> list[tuple[int, int, int]]:
        """Counties where local transmission is established, with the days it was listed: (county, from
        day, to day), days counted from the window's start.

        A county is listed once `medium_min_local` of its reported cases are confirmed cases infected
        locally (not imported from the origin, not suspected); imported cases alone, traced and isolated,
        do not make it a medium-risk region. It stays listed until `MEDIUM_CLEAR_DAYS` days pass without a
        new local case reported, and is listed again by the next one.
        """
        local = cases[(self.route[cases] > SEED) & (self.status[cases] == CONFIRMED)]
        need = self.preset.medium_min_local
        out = []
        for county in np.unique(region_of[local]):
            reports = np.sort(self.report[local[region_of[local] == county]]) // DAY
            if len(reports) < need:
                continue
            first = until = int(reports[need - 1])
            for day in (int(d) for d in reports[need - 1 :]):
                if day > until + MEDIUM_CLEAR_DAYS:
                    out.append((int(county), first, until + MEDIUM_CLEAR_DAYS))
                    first = day
                until = day
            out.append((int(county), first, until + MEDIUM_CLEAR_DAYS))
        return out


def shared_hours(
    place: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    person: np.ndarray,
    rel: np.ndarray,
    infectious: np.ndarray,
    susceptible: np.ndarray,
    beta: np.ndarray,
    n_places: int,
    route: int,
) -> tuple[Exposure, np.ndarray]:
    """Transmission between people at the same place in the same clock hour: the rows marked `infectious`
    put a pressure (their minutes in the hour, times their relative infectiousness `rel`) on the place-hour,
    and each `susceptible` row there takes a hazard of its own `beta` times its minutes in the hour times
    that pressure. Returns the exposures and the contacts, as rows (infector, person, `route`, hours
    shared) with the place-hour's leading source."""
    none = np.zeros((0, 4), dtype=np.int64)
    empty = Exposure(*(np.zeros(0, t) for t in (np.int64, np.int64, np.int64, float)))
    i_rows = np.nonzero(infectious)[0]
    if not len(i_rows):
        return empty, none
    row, hour = tokenize.explode(
        start[i_rows] // _HOUR, (end[i_rows] - 1) // _HOUR - start[i_rows] // _HOUR + 1
    )
    row = i_rows[row]
    minutes = np.minimum(end[row], (hour + 1) * _HOUR) - np.maximum(start[row], hour * _HOUR)
    key = hour * n_places + place[row]
    weight = minutes / _HOUR * rel[person[row]]
    keys, inverse = np.unique(key, return_inverse=True)
    pressure = np.bincount(inverse, weights=weight, minlength=len(keys))
    best = np.lexsort((-minutes, inverse))
    lead = best[np.r_[True, inverse[best][1:] != inverse[best][:-1]]]
    source = person[row][lead]

    s_rows = np.nonzero(susceptible)[0]
    row, hour = tokenize.explode(
        start[s_rows] // _HOUR, (end[s_rows] - 1) // _HOUR - start[s_rows] // _HOUR + 1
    )
    row = s_rows[row]
    pos = np.minimum(np.searchsorted(keys, hour * n_places + place[row]), len(keys) - 1)
    found = keys[pos] == hour * n_places + place[row]
    row, hour, pos = row[found], hour[found], pos[found]
    minutes = np.minimum(end[row], (hour + 1) * _HOUR) - np.maximum(start[row], hour * _HOUR)
    hazard = beta[row] * minutes / _HOUR * pressure[pos]
    who = person[row].astype(np.int64)
    if not len(who):
        return empty, none
    people, inv = np.unique(who, return_inverse=True)
    total = np.bincount(inv, weights=hazard, minlength=len(people))
    top = np.lexsort((-hazard, inv))
    top = top[np.r_[True, inv[top][1:] != inv[top][:-1]]]
    shared = np.unique(np.stack([source[pos].astype(np.int64), who, hour], axis=1), axis=0)
    pairs, hours = np.unique(shared[:, :2], axis=0, return_counts=True)
    contacts = np.column_stack([pairs, np.full(len(pairs), route), hours]).astype(np.int64)
    exposure = Exposure(people, hour[top] * _HOUR + 30, source[pos[top]], 1 - np.exp(-total))
    return exposure, contacts


def without_nights_at_base(stays: pd.DataFrame) -> pd.DataFrame:
    """The stays with the night hours (`NIGHT`, 22:00 to 06:00) cut out of every stay at one's base.

    A stay at home, in a hotel or away (`BASE_KINDS`) is kept only where it overlaps the day's hours
    06:00 to 22:00, as one row per day it overlaps; other stays are kept whole. `start` and `end` are
    naive timestamps; the order of the rows is kept (base stays' pieces in place of the stay).
    """
    at_base = stays["kind"].isin(BASE_KINDS).to_numpy()
    if not at_base.any():
        return stays
    start = tokenize.seconds(stays["start"]) // 60
    end = tokenize.seconds(stays["end"]) // 60
    night_start, night_end = NIGHT
    # the day segments [d + night_end, d + night_start) of the days d each base stay overlaps
    first = np.where(at_base, start // DAY, 0)
    count = np.where(at_base, (end - 1) // DAY - first + 1, 1)
    row, day = tokenize.explode(first, count)
    seg_start = np.where(at_base[row], np.maximum(start[row], day * DAY + night_end), start[row])
    seg_end = np.where(at_base[row], np.minimum(end[row], day * DAY + night_start), end[row])
    keep = seg_end > seg_start
    row, seg_start, seg_end = row[keep], seg_start[keep], seg_end[keep]
    out = stays.iloc[row].reset_index(drop=True)
    out["start"] = (seg_start * 60).astype("datetime64[s]")
    out["end"] = (seg_end * 60).astype("datetime64[s]")
    return out


def investigation_tokens(
    epi: Epidemic,
    cases: np.ndarray,
    case_ids: np.ndarray,
    stays: pd.DataFrame,
    tickets: pd.DataFrame,
    hotel_stays: pd.DataFrame,
    checkins: pd.DataFrame,
    declarations: pd.DataFrame,
    population: pd.DataFrame,
    cells: pd.DataFrame,
    window_start: dt.date,
    n_days: int,
    recall: float,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Each case's canonical tokens from its infectious period, each kept with probability `recall`.

    `stays` are the true stays of the cases (with a `kind` column), `tickets`, `hotel_stays`, venue
    `checkins`, hosts' `declarations` and `population` the true records (subject ids valid).
    Region-day tokens are not part of an investigation.

    An interview establishes where a case went, not that it slept at home: the cell-hour tokens of the
    night hours (22:00 to 06:00, `NIGHT`) a case spends at its base — at home, in its hotel, or where it
    lodges away — are not listed (see `without_nights_at_base`). The people it spent those hours with
    are its household (the `household` token) or its roommates and fellow guests (`room-night` and
    `hotel-night`); listing the home cell's night hours would instead name every neighbour in the cell.
    Nor are the hours in hospital, where a case is isolated once reported. Every other hour of every stay,
    at home in the evening included, is listed.
    """
    people = epi.city.people
    sid = people.subject_id[cases].astype(str)
    case_of = pd.Series(case_ids, index=sid)
    first = np.maximum(
        0, np.where(epi.infected_at[cases] < NEVER, epi.inf_start[cases], epi.onset[cases] - 2 * DAY)
    )
    first_day = np.maximum(first // DAY, 0)
    last_day = np.minimum(epi.report[cases] // DAY, n_days - 1)
    w0 = np.datetime64(window_start, "D").astype(np.int64)
    span = pd.DataFrame({"subject_id": sid, "first": w0 + first_day, "last": w0 + last_day})

    frames = [
        tokenize.stay_tokens(without_nights_at_base(stays[stays["kind"] != HOSPITAL]), cells),
        tokenize.ticket_tokens(tickets),
        tokenize.hotel_tokens(hotel_stays),
        tokenize.checkin_tokens(checkins),
        tokenize.declaration_tokens(declarations),
    ]
    dated = pd.concat([f.astype(str) for f in frames], ignore_index=True)
    dated = dated[~dated.token.str.startswith("region-day|")]
    day = tokenize.days(pd.to_datetime(dated.partition_id.str.split("@").str[1]))
    dated = dated.assign(day=day).merge(span, on="subject_id")
    dated = dated[(dated.day >= dated["first"]) & (dated.day <= dated["last"])]

    static = tokenize.population_tokens(population[population.subject_id.isin(sid)]).astype(str)
    static = static[static.token.str.startswith("household|")]

    # friends visited during the infectious period, named by their identity
    v = stays[stays.kind == VISIT]
    v_day = tokenize.seconds(v.start) // 86400
    v = v.assign(day=v_day).merge(span, on="subject_id")
    v = v[(v.day >= v["first"]) & (v.day <= v["last"])]
    guest = pd.Index(people.subject_id.astype(str)).get_indexer(v.subject_id)
    friend_sid = people.subject_id[people.friend[guest]].astype(str) if len(v) else np.zeros(0, dtype=str)
    friends = population.set_index("subject_id").reindex(np.unique(friend_sid)).dropna().reset_index()
    identity = tokenize.population_tokens(friends).astype(str)
    identity = identity[identity.token.str.startswith("identity|")]
    named = pd.DataFrame({"subject_id": v.subject_id.to_numpy(), "friend": friend_sid})
    named = named.merge(identity.rename(columns={"subject_id": "friend"}), on="friend")

    rows = pd.concat(
        [dated[["subject_id", "token"]], static[["subject_id", "token"]], named[["subject_id", "token"]]],
        ignore_index=True,
    ).drop_duplicates()
    rows = pd.DataFrame(
        {"case_id": case_of.reindex(rows.subject_id).to_numpy(), "token": rows.token.to_numpy()}
    )
    rows = rows.sort_values(["case_id", "token"], kind="stable").reset_index(drop=True)
    keep = rng.random(len(rows)) < recall
    return rows[keep].reset_index(drop=True)
