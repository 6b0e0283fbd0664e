"""Daily movement: where everyone is, as carrier-style stays (person, cell, start, end, kind).

Each day, every person follows a plan drawn for their role and the kind of day: workers commute to work
(perhaps out for lunch, an errand on the way back, an evening out), pupils go to school, small children
to kindergarten, the retired run morning errands and afternoon walks, visitors go about the city from
their hotel; on rest days people shop, visit friends and go out. Long trips leave a stay in a transit
cell halfway. Travellers go to a station, ride, and settle at their new base; cases are isolated in
hospital; some of the sick stay home.

Stays are contiguous: a stay ends when the next one starts, at a change of cell or of activity (an errand
in one's own cell, then home, are two stays in that cell). The stay at one's base overnight is open
until the next morning; a person who stays in all day has that stay split at noon, so every stay that
starts on a day is complete once the next day has been planned (and can be written out).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from simulation.city import ROLE_HOME, ROLE_KINDER, ROLE_SCHOOL, ROLE_VISITOR, ROLE_WORK, City
from simulation.transport import Travel

KINDS = (
    "home",
    "hotel",
    "away",
    "hospital",
    "work",
    "school",
    "errand",
    "lunch",
    "evening",
    "visit",
    "transit",
    "station",
)
HOME, HOTEL, AWAY, HOSPITAL, WORK, SCHOOL, ERRAND, LUNCH, EVENING, VISIT, TRANSIT, STATION = range(len(KINDS))
DAY = 1440
NOON = 720
TRANSIT_MINUTES = 20


@dataclass
class Stays:
    """A batch of stays; times in minutes since the window's start."""

    person: np.ndarray  # int32
    cell: np.ndarray  # int32 cell index
    start: np.ndarray  # int64
    end: np.ndarray  # int64
    kind: np.ndarray  # int8

    @staticmethod
    def empty() -> Stays:
        """No stays."""
        return Stays(
            np.zeros(0, np.int32),
            np.zeros(0, np.int32),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int8),
        )

    def __len__(self) -> int:
        """Number of stays."""
        return len(self.person)

    def select(self, mask: np.ndarray) -> Stays:
        """The stays where mask (a boolean array or an index array) holds."""
        return Stays(*(getattr(self, f.name)[mask] for f in fields(self)))

    @staticmethod
    def concat(parts: list[Stays]) -> Stays:
        """All given stays, in order."""
        if not parts:
            return Stays.empty()
        return Stays(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Stays)))


class _Plan:
    """Moves a group of people through a day, recording an event (cell, time, kind) at each arrival."""

    def __init__(self, city: City, cell: np.ndarray, earliest: np.ndarray) -> None:
        self.cells = city.cells
        self.cell = cell.astype(np.int32).copy()
        self.t = earliest.astype(np.int64).copy()
        self.events: list[tuple[np.ndarray, np.ndarray, np.ndarray, int | np.ndarray]] = []

    def go(
        self,
        mask: np.ndarray,
        dest: np.ndarray,
        kind: int | np.ndarray,
        minutes: np.ndarray,
        depart_at: np.ndarray | None = None,
    ) -> None:
        """Those in mask leave (not before depart_at) for dest and stay there `minutes`."""
        dest = dest.astype(np.int32)
        moving = mask & (dest != self.cell)
        dep = self.t if depart_at is None else np.maximum(self.t, depart_at)
        tt = np.rint(4 + self.cells.distance_km(self.cell, dest) * 2.5).astype(np.int64)
        grid = (self.cell < self.cells.n_grid) & (dest < self.cells.n_grid)
        transit = moving & grid & (tt >= TRANSIT_MINUTES)
        self.events.append((transit, self.cells.midpoint(self.cell, dest), dep, TRANSIT))
        arrive = np.where(moving, dep + tt, dep)
        self.events.append((mask, dest, arrive, kind))
        self.t = np.where(mask, arrive + np.maximum(np.rint(minutes), 5).astype(np.int64), self.t)
        self.cell = np.where(mask, dest, self.cell)


class Mobility:
    """Everyone's open (overnight) stay and base, and the day-by-day plans that move them."""

    def __init__(self, city: City, travel: Travel) -> None:
        """Start everyone at their starting place at the window's first midnight."""
        self.city = city
        self.travel = travel
        n = city.people.n
        self.open_cell = travel.start_cell.astype(np.int32).copy()
        self.open_start = np.zeros(n, dtype=np.int64)
        self.open_kind = travel.start_kind.astype(np.int8).copy()
        self.base_cell = self.open_cell.copy()
        self.base_kind = self.open_kind.copy()

    def day(
        self,
        d: int,
        rest_day: bool,
        stay_in: np.ndarray,
        report: np.ndarray,
        rng: np.random.Generator,
        outings: float = 1.0,
    ) -> Stays:
        """Plan day d and return the stays it completes (including the night before).

        `stay_in` marks people who stay at their base all day (the sick); `report` is each person's
        report time (minutes; cases go to hospital on that day, or the next morning if travelling);
        `outings` the share of the usual outings (errands, evenings out, visits, visitors' errands)
        still made that day — less than 1 once people keep to their homes.
        """
        t0 = d * DAY
        n = self.city.people.n
        j = self.travel.journeys
        today = np.nonzero(j.day == d)[0]
        travelling = np.zeros(n, dtype=bool)
        travelling[j.person[today]] = True
        to_hospital = (report < t0 + DAY) & (self.base_kind != HOSPITAL) & ~travelling
        idle = (self.base_kind == HOSPITAL) | stay_in | to_hospital | travelling
        regular = np.nonzero(~idle)[0]

        columns: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        plan = self._regular(regular, t0, rest_day, rng, outings)
        for mask, cell, time, kind in plan.events:
            idx = np.nonzero(mask)[0]
            kinds = np.broadcast_to(kind, mask.shape)[idx]
            columns.append((regular[idx], cell[idx], time[idx], kinds))

        jp = j.person[today]
        columns.append((jp, j.from_cell[today], j.depart[today] - 40, np.full(len(today), STATION)))
        columns.append((jp, j.to_cell[today], j.arrive[today], np.full(len(today), STATION)))
        columns.append((jp, j.base_cell[today], j.arrive[today] + 30, j.base_kind[today]))

        hp = np.nonzero(to_hospital)[0]
        h_time = np.where(report[hp] >= t0, report[hp], t0 + 540)
        h_time = np.clip(h_time, np.maximum(self.open_start[hp] + 30, t0 + 360), t0 + DAY - 30)
        h_cell = self.city.cells.hospital[self.city.cells.region[self.base_cell[hp]]]
        columns.append((hp, h_cell, h_time, np.full(len(hp), HOSPITAL)))

        stays = self._advance(columns, t0)
        self.base_cell[jp] = j.base_cell[today]
        self.base_kind[jp] = j.base_kind[today]
        self.base_cell[hp] = h_cell
        self.base_kind[hp] = HOSPITAL
        return stays

    def close(self, end: int) -> Stays:
        """Close every open stay at `end` (the window's end)."""
        keep = self.open_start < end
        return Stays(
            np.nonzero(keep)[0].astype(np.int32),
            self.open_cell[keep],
            self.open_start[keep],
            np.full(int(keep.sum()), end, dtype=np.int64),
            self.open_kind[keep],
        )

    def _advance(
        self, columns: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], t0: int
    ) -> Stays:
        """Turn the day's events into completed stays and new open stays; split idle days at noon."""
        seq = np.concatenate([np.full(len(c[0]), i) for i, c in enumerate(columns)])
        p = np.concatenate([c[0] for c in columns]).astype(np.int64)
        c = np.concatenate([c[1] for c in columns]).astype(np.int32)
        t = np.concatenate([c[2] for c in columns]).astype(np.int64)
        k = np.concatenate([c[3] for c in columns]).astype(np.int8)
        order = np.lexsort((seq, p))
        p, c, t, k = p[order], c[order], t[order], k[order]
        first = np.r_[True, p[1:] != p[:-1]] if len(p) else np.zeros(0, bool)
        # a new stay at each change of cell, or of activity within a cell (an errand in one's home cell,
        # then home: two stays, so that the night at home is not taken for the errand)
        prev = np.where(first, self.open_cell[p], np.r_[-1, c[:-1]] if len(c) else c)
        prev_kind = np.where(first, self.open_kind[p], np.r_[-1, k[:-1]] if len(k) else k)
        keep = (c != prev) | (k != prev_kind)
        p, c, t, k = p[keep], c[keep], t[keep], k[keep]
        if len(p):
            first = np.r_[True, p[1:] != p[:-1]]
            last = np.r_[p[1:] != p[:-1], True]
        else:
            first = last = np.zeros(0, bool)
        fp = p[first]
        opened = Stays(
            fp.astype(np.int32), self.open_cell[fp], self.open_start[fp], t[first], self.open_kind[fp]
        )
        inner = ~last
        between = Stays(p[inner].astype(np.int32), c[inner], t[inner], np.r_[t[1:], 0][inner], k[inner])
        lp = p[last]
        self.open_cell[lp], self.open_start[lp], self.open_kind[lp] = c[last], t[last], k[last]

        still = np.ones(len(self.open_cell), dtype=bool)
        still[fp] = False
        noon = t0 + NOON
        split = np.nonzero(still & (self.open_start < noon))[0]
        kept = Stays(
            split.astype(np.int32),
            self.open_cell[split],
            self.open_start[split],
            np.full(len(split), noon, dtype=np.int64),
            self.open_kind[split],
        )
        self.open_start[split] = noon
        out = Stays.concat([opened, between, kept])
        return out.select(out.end > out.start)

    def _regular(
        self, who: np.ndarray, t0: int, rest_day: bool, rng: np.random.Generator, outings: float = 1.0
    ) -> _Plan:
        """Plan the day of people going about their usual life (by role, the kind of day, and how many
        of the usual outings are still made)."""
        city = self.city
        cells, people = city.cells, city.people
        n = len(who)
        base = self.base_cell[who]
        at_home = self.base_kind[who] == HOME
        role = np.where(at_home, people.role[who], ROLE_VISITOR)
        region = cells.region[base]
        u = rng.random((8, n))
        workday = not rest_day

        def normal(mean: float, sd: float) -> np.ndarray:
            return rng.normal(mean, sd, n)

        # the main activity of the day: work, school, kindergarten, visitors' business, or a morning outing
        go_main = (
            np.select(
                [role == ROLE_WORK, role == ROLE_SCHOOL, role == ROLE_KINDER, role == ROLE_VISITOR],
                [0.93 if workday else 0.12, 0.97 if workday else 0.0, 0.9 if workday else 0.0, 0.8 * outings],
                0.0,
            )
            > u[0]
        )
        place = people.work[who].copy()
        visitor = role == ROLE_VISITOR
        place[visitor] = cells.sample_in_regions(region[visitor], rng)
        main_kind = np.select([role == ROLE_WORK, visitor], [WORK, ERRAND], SCHOOL)
        dep = np.select(
            [role == ROLE_WORK, role == ROLE_SCHOOL, role == ROLE_KINDER],
            [normal(450, 35), normal(430, 15), normal(480, 20)],
            normal(540, 60),
        )
        am = np.select([role == ROLE_WORK, role == ROLE_VISITOR], [normal(240, 20), normal(180, 40)], 0.0)
        whole = np.select([role == ROLE_SCHOOL, role == ROLE_KINDER], [normal(570, 30), normal(510, 30)], 0.0)
        pm = np.select([role == ROLE_WORK, role == ROLE_VISITOR], [normal(270, 40), normal(180, 60)], 0.0)
        lunch = go_main & (((role == ROLE_WORK) & (u[1] < 0.35)) | (visitor & (u[1] < 0.5)))
        # otherwise a morning outing (errands, market, a walk)
        outing = ~go_main & (u[2] < (0.55 if workday else 0.45) * outings) & (role != ROLE_VISITOR)
        errand_cell = np.where(u[3] < 0.7, cells.near(base, 1.2, rng), cells.sample_in_regions(region, rng))
        p_after = np.select([role == ROLE_WORK, role == ROLE_SCHOOL, visitor], [0.25, 0.1, 0.3], 0.0)
        after = (go_main & (u[4] < p_after * outings)) | (outing & (u[4] < 0.2 * outings))

        plan = _Plan(city, base, np.maximum(self.open_start[who] + 60, t0 + 300))
        start = t0 + np.where(go_main, dep, np.where(rest_day, normal(570, 90), dep))
        plan.go(go_main, place, main_kind, np.where(lunch, am, am + pm + whole), depart_at=start)
        plan.go(lunch, cells.near(place, 0.7, rng), LUNCH, rng.uniform(40, 60, n))
        plan.go(lunch, place, main_kind, pm)
        plan.go(outing, errand_cell, ERRAND, rng.uniform(40, 150, n), depart_at=start)
        plan.go(after, cells.near(base, 1.0, rng), ERRAND, rng.uniform(20, 70, n))
        out = go_main | outing | after
        plan.go(out, base, self.base_kind[who], np.zeros(n))

        # the second outing: an afternoon or evening out, or a visit to a friend
        p_second = np.select(
            [role == ROLE_WORK, role == ROLE_SCHOOL, role == ROLE_KINDER, visitor],
            [0.15, 0.05, 0.1, 0.4] if workday else [0.5, 0.5, 0.4, 0.5],
            0.35 if workday else 0.5,
        )
        second = u[5] < p_second * outings
        target = np.select(
            [(role == ROLE_HOME) & workday, visitor, rest_day & np.ones(n, bool)],
            [normal(930, 60), normal(1140, 60), normal(900, 150)],
            normal(1170, 45),
        )
        friend = people.friend[who]
        visit = second & at_home & (friend >= 0) & (u[6] < (0.35 if rest_day else 0.15))
        host = np.where(friend >= 0, people.home[np.maximum(friend, 0)], base)
        evening_cell = np.where(u[7] < 0.4, cells.sample_in_regions(region, rng), cells.near(base, 1.5, rng))
        where = np.where(visit, host, evening_cell)
        kind = np.where(visit, VISIT, EVENING)
        length = np.where(visit, rng.uniform(90, 240, n), rng.uniform(60, 200, n))
        plan.go(second, where, kind, length, depart_at=t0 + np.clip(target, 600, 1290).astype(np.int64))
        plan.go(second, base, self.base_kind[who], np.zeros(n))
        return plan
