"""`simulate`: build a city, run 14 days of movement and epidemic, and write every file of a RUN.

All randomness comes from NumPy generators seeded by (seed, purpose[, day]), and everything is written in
a fixed order with fixed Parquet options, so the same seed and parameters give byte-identical files.
Stays are generated and written one day at a time (one row group per day).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from proto.schemas import SCHEMAS
from runctx.parquet import write_table
from runctx.progress import Progress
from simulation.applicants import write_applicants
from simulation.city import City, build_cells, build_hotels, build_people, day_number
from simulation.epidemic import CONFIRMED, NEVER, ROUTES, Epidemic, investigation_tokens
from simulation.mobility import DAY, Mobility, Stays
from simulation.presets import Preset, get_preset
from simulation.transport import Travel, plan_travel, visitor_counts
from simulation.venues import Venues, Visits, build_venues, checkin_frame, day_visits, declarations
from simulation.writer import (
    MALFORMED,
    UNKNOWN_CELL_BASE,
    Corruption,
    DayPartitionedWriter,
    dates,
    fixed_strings,
    strings,
    timestamps,
)

HIGH_RISK_FROM = dt.date(2019, 12, 1)


def is_rest_day(preset: Preset, day: dt.date) -> bool:
    """A weekend or holiday, unless it is a make-up working day."""
    if day in preset.extra_workdays:
        return False
    return day in preset.holidays or day.weekday() >= 5


def phone_numbers(has_phone: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Distinct 11-digit mobile numbers (`1` and a carrier prefix) for those with a phone, None for others."""
    prefixes = np.array(["135", "138", "139", "150", "186", "189"])
    draw = rng.choice(10**8, size=len(has_phone), replace=False)
    prefix = prefixes[rng.integers(0, len(prefixes), len(has_phone))]
    numbers = np.char.add(prefix, np.char.zfill(draw.astype(str), 8))
    out = numbers.astype(object)
    out[~has_phone] = None
    return out


class _Run:
    """One simulation run: the generators, the city, and the files being written."""

    def __init__(
        self,
        preset: Preset,
        seed: int,
        out: Path,
        malformed_rate: float,
        recall: float,
        late_rate: float,
        deterministic: bool,
    ) -> None:
        self.p, self.seed, self.out, self.deterministic = preset, seed, out, deterministic
        self.malformed_rate, self.recall, self.late_rate = malformed_rate, recall, late_rate
        self.late: dict[str, dict[str, int]] = {}
        self.epoch_s = day_number(preset.window_start) * 86400
        self.malformed: dict[str, dict[str, int]] = {}
        self.counts: dict[str, int] = {}
        self.transmission: dict[str, int] = {}
        self.observed: dict[str, object] = {}

    def rng(self, *key: int) -> np.random.Generator:
        """The generator for one purpose (and day)."""
        return np.random.default_rng([self.seed, *key])

    def build(self) -> None:
        """The city, its visitors and hotels, and the travel plan."""
        p = self.p
        counts = visitor_counts(p, self.rng(1))
        cells = build_cells(p, self.rng(2))
        people = build_people(p, cells, counts, self.rng(3))
        hotels = build_hotels(p, cells, self.rng(4))
        self.city = City(cells, people, hotels)
        self.travel: Travel = plan_travel(p, self.city, self.rng(5))
        self.mobility = Mobility(self.city, self.travel)
        self.epi = Epidemic(p, self.city, self.travel, self.rng(6))

    # stays

    def run_days(self, progress: Progress) -> None:
        """Move everyone day by day, spreading the epidemic, writing each day's stays (some of them late)."""
        p = self.p
        n_days = p.sim_days
        writer = self.partitioned("stays")
        self.malformed["carrier/stays"] = dict.fromkeys(MALFORMED["stays"], 0)
        self.counts["stays"] = 0
        self.counts["infections_in_window"] = 0
        pending = Stays.empty()
        tracked: list[Stays] = []
        self.city_venues = self.venues()
        self.epi.use_venues(self.city_venues.frame["kind"].to_numpy())
        self.visits: list[Visits] = []
        for d in range(n_days):
            day = p.window_start + dt.timedelta(days=d)
            outings = 1.0 - p.distancing if day >= p.distancing_from else 1.0
            stay_in = self.epi.stay_in(d)
            stays = self.mobility.day(
                d, is_rest_day(p, day), stay_in, self.epi.report, self.rng(100, d), outings
            )
            absent = stay_in | (self.epi.report <= d * DAY)
            ill = (self.epi.onset < d * DAY + DAY // 2) & ~absent
            self.visits.append(day_visits(self.city, self.city_venues, day, absent, ill, self.rng(340, d)))
            self.counts["infections_in_window"] += self.epi.step(
                d, stays, self.visits[d], self.mobility.base_kind, self.rng(200, d)
            )
            tracked.append(stays.select(self.epi.tracked[stays.person]))
            pending = Stays.concat([pending, stays])
            if d > 0:
                pending = self._flush(writer, pending, d - 1)
            progress("moving people, spreading the epidemic", d + 1, n_days)
        final = self.mobility.close(n_days * DAY)
        tracked.append(final.select(self.epi.tracked[final.person]))
        pending = Stays.concat([pending, final])
        self._flush(writer, pending, n_days - 1)
        self.late["carrier/stays"] = writer.counts()
        self.tracked = Stays.concat(tracked)

    def partitioned(self, dataset: str) -> DayPartitionedWriter:
        """The writer of a day-partitioned dataset, deliveries up to the run's last day."""
        return DayPartitionedWriter(self.out, dataset, self.late_rate, self.p.last_day)

    def _flush(self, writer: DayPartitionedWriter, pending: Stays, day: int) -> Stays:
        """Write the stays that start on `day` (of people with phones), return those starting later."""
        start_day = pending.start // DAY
        now = pending.select((start_day == day) & self.city.people.phone[pending.person])
        rest = pending.select(start_day > day)
        end = np.minimum(now.end, self.p.sim_days * DAY)
        order = np.lexsort((now.cell, now.person, now.start))
        person, cell, start, end = now.person[order], now.cell[order], now.start[order], end[order]
        bad = Corruption("stays", len(person), self.malformed_rate, self.rng(300, day))
        sid = bad.subject_ids(self.city.people.subject_id[person])
        cell_id = self.city.cells.ids[cell].copy()
        cell_id[bad.rows("unknown_cell")] = UNKNOWN_CELL_BASE + cell[bad.rows("unknown_cell")]
        flip = bad.rows("end_not_after_start")
        end[flip] = start[flip] - bad.rng.integers(0, 120, len(flip))
        table = pa.table(
            [
                fixed_strings(sid, bad.null("subject_id")),
                pa.array(cell_id, type=pa.int32(), mask=bad.null("cell_id")),
                timestamps(self.epoch_s + start * 60, bad.null("start")),
                timestamps(self.epoch_s + end * 60, bad.null("end")),
            ],
            schema=SCHEMAS["stays"],
        )
        delivered = writer.write_day(self.p.window_start + dt.timedelta(days=day), table, self.rng(310, day))
        self.counts["stays"] += int(delivered.sum())
        for category, n in bad.counts(delivered).items():
            self.malformed["carrier/stays"][category] += n
        return rest

    # static and small files

    def write_cells(self) -> pd.DataFrame:
        """RUN/data/carrier/cells.parquet; returns the cells frame."""
        cells = self.city.cells
        codes = np.array([r.code for r in self.p.regions], dtype=object)[cells.region]
        table = pa.table(
            [
                pa.array(cells.ids, pa.int32()),
                strings(codes),
                pa.array(cells.x, pa.float32()),
                pa.array(cells.y, pa.float32()),
            ],
            schema=SCHEMAS["cells"],
        )
        write_table(self.out / "data" / "carrier" / "cells.parquet", table)
        self.counts["cells"] = len(cells.ids)
        return table.to_pandas()

    def population(self) -> pd.DataFrame:
        """The true population register (residents), sorted by household then subject id."""
        people = self.city.people
        n = people.n_residents
        frame = pd.DataFrame(
            {
                "subject_id": people.subject_id[:n].astype(str),
                "name": people.name[:n],
                "birth_date": people.birth[:n].astype("datetime64[D]"),
                "household_id": people.household_id[people.household[:n]],
                "phone": phone_numbers(people.phone[:n], self.rng(7)),
            }
        )
        return frame.sort_values(["household_id", "subject_id"], kind="stable").reset_index(drop=True)

    def write_population(self, frame: pd.DataFrame) -> None:
        """RUN/data/police/population.parquet, with malformed rows."""
        bad = Corruption("population", len(frame), self.malformed_rate, self.rng(301))
        sid = bad.subject_ids(frame.subject_id.to_numpy().astype("S18"))
        table = pa.table(
            [
                fixed_strings(sid, bad.null("subject_id")),
                strings(frame.name.to_numpy(), bad.null("name")),
                dates(
                    frame.birth_date.to_numpy().astype("datetime64[D]").astype(np.int64),
                    bad.null("birth_date"),
                ),
                strings(frame.household_id.to_numpy(), bad.null("household_id")),
                strings(frame.phone.to_numpy(), frame.phone.isna().to_numpy()),
            ],
            schema=SCHEMAS["population"],
        )
        write_table(self.out / "data" / "police" / "population.parquet", table)
        self.malformed["police/population"] = bad.counts()
        self.counts["persons"] = len(frame)
        self.counts["households"] = len(self.city.people.household_size)

    def tickets(self) -> pd.DataFrame:
        """The true tickets, sorted by service date, departure, trip, carriage and seat."""
        j, s = self.travel.journeys, self.travel.services
        cells = self.city.cells
        codes = np.array([r.code for r in self.p.regions], dtype=object)
        w0 = day_number(self.p.window_start)
        frame = pd.DataFrame(
            {
                "subject_id": self.city.people.subject_id[j.person].astype(str),
                "trip_id": s.trip_id[j.service].astype(object),
                "service_date": (w0 + j.day).astype("datetime64[D]"),
                "carriage": j.carriage.astype(np.int16),
                "seat": j.seat,
                "origin": codes[cells.region[j.from_cell]],
                "destination": codes[cells.region[j.to_cell]],
                "depart": (self.epoch_s + j.depart * 60).astype("datetime64[s]"),
                "arrive": (self.epoch_s + j.arrive * 60).astype("datetime64[s]"),
            }
        )
        keys = ["service_date", "depart", "trip_id", "carriage", "seat", "subject_id"]
        return frame.sort_values(keys, kind="stable").reset_index(drop=True)

    def write_tickets(self, frame: pd.DataFrame) -> None:
        """RUN/data/transport/tickets/, partitioned by service date, with malformed and late rows."""
        bad = Corruption("tickets", len(frame), self.malformed_rate, self.rng(302))
        sid = bad.subject_ids(frame.subject_id.to_numpy().astype("S18"))
        day = frame.service_date.to_numpy().astype("datetime64[D]").astype(np.int64)
        table = pa.table(
            [
                fixed_strings(sid, bad.null("subject_id")),
                strings(frame.trip_id.to_numpy(), bad.null("trip_id")),
                dates(day, bad.null("service_date")),
                pa.array(frame.carriage.to_numpy(), pa.int16(), mask=bad.null("carriage")),
                strings(frame.seat.to_numpy()),
                strings(frame.origin.to_numpy()),
                strings(frame.destination.to_numpy()),
                timestamps(frame.depart.to_numpy().astype(np.int64)),
                timestamps(frame.arrive.to_numpy().astype(np.int64)),
            ],
            schema=SCHEMAS["tickets"],
        )
        writer = self.partitioned("tickets")
        delivered = writer.write_days(day, table, lambda d: self.rng(311, d))
        self.late["transport/tickets"] = writer.counts()
        self.malformed["transport/tickets"] = bad.counts(delivered)
        self.counts["tickets"] = int(delivered.sum())

    def hotel_stays(self) -> pd.DataFrame:
        """The true hotel stays, sorted by check-in, hotel, room and subject id."""
        h, hotels = self.travel.hotel_stays, self.city.hotels
        frame = pd.DataFrame(
            {
                "subject_id": self.city.people.subject_id[h.person].astype(str),
                "hotel_id": hotels.hotel_id[h.hotel],
                "room": hotels.room_name(h.room),
                "check_in": (day_number(self.p.window_start) + h.check_in).astype("datetime64[D]"),
                "nights": h.nights.astype(np.int16),
            }
        )
        keys = ["check_in", "hotel_id", "room", "subject_id"]
        return frame.sort_values(keys, kind="stable").reset_index(drop=True)

    def write_hotel_stays(self, frame: pd.DataFrame) -> None:
        """RUN/data/police/hotel_stays/, partitioned by check-in day, with malformed and late rows."""
        bad = Corruption("hotel_stays", len(frame), self.malformed_rate, self.rng(303))
        sid = bad.subject_ids(frame.subject_id.to_numpy().astype("S18"))
        nights = frame.nights.to_numpy().copy()
        nights[bad.rows("bad_nights")] = bad.rng.integers(-1, 1, len(bad.rows("bad_nights")))
        day = frame.check_in.to_numpy().astype("datetime64[D]").astype(np.int64)
        table = pa.table(
            [
                fixed_strings(sid, bad.null("subject_id")),
                strings(frame.hotel_id.to_numpy(), bad.null("hotel_id")),
                strings(frame.room.to_numpy(), bad.null("room")),
                dates(day, bad.null("check_in")),
                pa.array(nights, pa.int16(), mask=bad.null("nights")),
            ],
            schema=SCHEMAS["hotel_stays"],
        )
        writer = self.partitioned("hotel_stays")
        delivered = writer.write_days(day, table, lambda d: self.rng(312, d))
        self.late["police/hotel_stays"] = writer.counts()
        self.malformed["police/hotel_stays"] = bad.counts(delivered)
        self.counts["hotel_stays"] = int(delivered.sum())

    def declarations(self) -> pd.DataFrame:
        """The true hosts' declarations (房东/单位反向申报), sorted by from_date."""
        return declarations(self.city, self.p.window_start, self.rng(320))

    def write_declarations(self, frame: pd.DataFrame) -> None:
        """RUN/data/police/declarations/, partitioned by from_date, with malformed and late rows."""
        bad = Corruption("declarations", len(frame), self.malformed_rate, self.rng(321))
        sid = bad.subject_ids(frame.subject_id.to_numpy().astype("S18"))
        first = frame.from_date.to_numpy().astype("datetime64[D]").astype(np.int64)
        last = frame.to_date.to_numpy().astype("datetime64[D]").astype(np.int64).copy()
        wrong = bad.rows("end_not_after_start")
        last[wrong] = first[wrong] - bad.rng.integers(1, 30, len(wrong))
        table = pa.table(
            [
                strings(frame.place_id.to_numpy(), bad.null("place_id")),
                fixed_strings(sid, bad.null("subject_id")),
                strings(frame.role.to_numpy()),
                dates(first, bad.null("from_date")),
                dates(last, bad.null("to_date")),
                strings(frame.declared_by.to_numpy()),
            ],
            schema=SCHEMAS["declarations"],
        )
        writer = self.partitioned("declarations")
        delivered = writer.write_days(first, table, lambda d: self.rng(322, d))
        self.late["police/declarations"] = writer.counts()
        self.malformed["police/declarations"] = bad.counts(delivered)
        self.counts["declarations"] = int(delivered.sum())

    def venues(self) -> Venues:
        """The venues of the city (compounds, markets, hospitals, stations, schools)."""
        codes = [r.code for r in self.p.regions]
        names = [r.name for r in self.p.regions]
        return build_venues(self.city, codes, names, self.rng(330))

    def write_venues(self, venues: Venues) -> pd.DataFrame:
        """RUN/data/venues/venues.parquet and checkins/ (day by day, with malformed and late rows); returns
        the true check-ins of the cases' tracked people (valid ids) for their investigations."""
        f = venues.frame
        table = pa.table(
            [
                strings(f.venue_id.to_numpy()),
                strings(f.kind.to_numpy()),
                strings(f.name.to_numpy()),
                strings(f.region_code.to_numpy()),
                pa.array(f.cell_id.to_numpy(), pa.int32()),
            ],
            schema=SCHEMAS["venues"],
        )
        write_table(self.out / "data" / "venues" / "venues.parquet", table)
        self.counts["venues"] = len(f)
        writer = self.partitioned("checkins")
        malformed = dict.fromkeys(MALFORMED["checkins"], 0)
        tracked_ids = set(self.city.people.subject_id[self.epi.tracked].astype(str))
        kept: list[pd.DataFrame] = []
        delivered_rows = 0
        for d in range(self.p.sim_days):
            day = self.p.window_start + dt.timedelta(days=d)
            frame = checkin_frame(self.city, venues, day, self.visits[d])
            kept.append(frame[frame.subject_id.isin(tracked_ids)])
            bad = Corruption("checkins", len(frame), self.malformed_rate, self.rng(341, d))
            sid = bad.subject_ids(frame.subject_id.to_numpy().astype("S18"))
            at = frame["at"].to_numpy().astype("datetime64[s]").astype(np.int64)
            leave_null = frame["leave"].isna().to_numpy().copy()
            leave = np.where(
                leave_null, 0, frame["leave"].to_numpy().astype("datetime64[s]").astype(np.int64)
            )
            wrong = bad.rows("end_not_after_start")
            leave[wrong] = at[wrong] - bad.rng.integers(0, 3600, len(wrong))
            leave_null[wrong] = False
            table = pa.table(
                [
                    fixed_strings(sid, bad.null("subject_id")),
                    strings(frame.venue_id.to_numpy(), bad.null("venue_id")),
                    timestamps(at, bad.null("at")),
                    timestamps(leave, leave_null),
                ],
                schema=SCHEMAS["checkins"],
            )
            delivered = writer.write_day(day, table, self.rng(342, d))
            for category, n in bad.counts(delivered).items():
                malformed[category] += n
            delivered_rows += int(delivered.sum())
        self.late["venues/checkins"] = writer.counts()
        self.malformed["venues/checkins"] = malformed
        self.counts["checkins"] = delivered_rows
        return pd.concat(kept, ignore_index=True)

    # health and truth

    def write_health(
        self,
        cells: pd.DataFrame,
        population: pd.DataFrame,
        tickets: pd.DataFrame,
        hotel_stays: pd.DataFrame,
        checkins: pd.DataFrame,
        declared: pd.DataFrame,
    ) -> None:
        """cases, investigations and risk regions (health/), and who infected whom (truth/)."""
        p, epi, people = self.p, self.epi, self.city.people
        n_days = p.sim_days
        w0 = day_number(p.window_start)
        cases = epi.case_rows(n_days)
        case_ids = np.array([f"C{i + 1:06d}" for i in range(len(cases))], dtype=object)
        sid = people.subject_id[cases].astype(str)
        onset = np.where(epi.onset[cases] < NEVER, epi.onset[cases], epi.report[cases])
        status = np.where(epi.status[cases] == CONFIRMED, "confirmed", "suspected").astype(object)
        table = pa.table(
            [
                strings(case_ids),
                strings(sid),
                strings(status),
                dates(w0 + np.floor_divide(onset, DAY)),
                dates(w0 + epi.report[cases] // DAY),
            ],
            schema=SCHEMAS["cases"],
        )
        write_table(self.out / "health" / "cases.parquet", table)
        self.counts["cases"] = len(cases)
        self.counts["confirmed"] = int((status == "confirmed").sum())
        self.counts["suspected"] = int((status == "suspected").sum())

        t = self.tracked.select(np.isin(self.tracked.person, cases))
        stays = pd.DataFrame(
            {
                "subject_id": people.subject_id[t.person].astype(str),
                "cell_id": self.city.cells.ids[t.cell],
                "start": (self.epoch_s + t.start * 60).astype("datetime64[s]"),
                "end": (self.epoch_s + np.minimum(t.end, n_days * DAY) * 60).astype("datetime64[s]"),
                "kind": t.kind,
            }
        )
        stays = stays[stays.end > stays.start]
        inv = investigation_tokens(
            epi,
            cases,
            case_ids,
            stays,
            tickets[tickets.subject_id.isin(sid)],
            hotel_stays[hotel_stays.subject_id.isin(sid)],
            checkins[checkins.subject_id.isin(sid)],
            declared[declared.subject_id.isin(sid)],
            population,
            cells,
            p.window_start,
            n_days,
            self.recall,
            self.rng(400),
        )
        # an investigation's tokens are recorded on the report day or, for some, one or two days later;
        # those recorded after the run's last day are not in the file
        report_day = pd.Series(w0 + epi.report[cases] // DAY, index=case_ids)
        delay = self.rng(401).choice(3, size=len(inv), p=(0.6, 0.3, 0.1))
        recorded = report_day.reindex(inv.case_id).to_numpy() + delay
        known = recorded <= day_number(p.last_day)
        inv, recorded = inv[known], recorded[known]
        write_table(
            self.out / "health" / "investigations.parquet",
            pa.table(
                [strings(inv.case_id.to_numpy()), strings(inv.token.to_numpy()), dates(recorded)],
                schema=SCHEMAS["investigations"],
            ),
        )
        self.counts["investigation_tokens"] = len(inv)

        n_counties = len(p.counties)
        region_of = np.where(people.home >= 0, people.region, self.city.cells.region[self.mobility.base_cell])
        in_city = cases[region_of[cases] < n_counties]
        last = day_number(p.last_day)
        rows = [(p.origin, "high", day_number(HIGH_RISK_FROM), last)]
        for region in p.outside:
            if region.medium_from is not None and region.medium_from <= p.last_day:
                rows.append((region.code, "medium", day_number(region.medium_from), last))
        for county, first, until in epi.medium_regions(in_city, region_of):
            rows.append((p.counties[county].code, "medium", w0 + first, min(w0 + until, last)))
        write_table(
            self.out / "health" / "risk_regions.parquet",
            pa.table(
                [
                    strings(np.array([r[0] for r in rows], dtype=object)),
                    strings(np.array([r[1] for r in rows], dtype=object)),
                    dates(np.array([r[2] for r in rows])),
                    dates(np.array([r[3] for r in rows])),
                ],
                schema=SCHEMAS["risk_regions"],
            ),
        )
        self.counts["risk_regions"] = len(rows)

        who = np.nonzero(epi.infected_at < n_days * DAY)[0]
        who = who[np.lexsort((people.subject_id[who], epi.infected_at[who]))]
        infector = epi.infector[who]
        infector_sid = people.subject_id[np.maximum(infector, 0)]
        write_table(
            self.out / "truth" / "infections.parquet",
            pa.table(
                [
                    fixed_strings(people.subject_id[who]),
                    timestamps(self.epoch_s + epi.infected_at[who] * 60),
                    fixed_strings(infector_sid, infector < 0),
                ],
                schema=SCHEMAS["infections"],
            ),
        )
        self.counts["infections"] = len(who)
        self.counts["seeds"] = int((infector < 0).sum())
        routes = np.bincount(epi.route[who], minlength=len(ROUTES))
        self.transmission = {name: int(n) for name, n in zip(ROUTES, routes, strict=True)}
        self.observed = epi.observed(n_days)

    def ill(self) -> pd.DataFrame:
        """The symptomatic: subject_id, onset and report dates (report NaT if never reported)."""
        epi, w0 = self.epi, np.datetime64(self.p.window_start, "D")
        who = np.nonzero(epi.onset < NEVER)[0]
        report = epi.report[who]
        return pd.DataFrame(
            {
                "subject_id": self.city.people.subject_id[who].astype(str),
                "onset": pd.to_datetime(w0 + (epi.onset[who] // DAY).astype("timedelta64[D]")),
                "report": pd.to_datetime(
                    np.where(
                        report < NEVER, w0 + (report // DAY).astype("timedelta64[D]"), np.datetime64("NaT")
                    )
                ),
            }
        )

    def write_scenario(self) -> dict[str, object]:
        """RUN/scenario.json: the parameters, counts and malformed rows injected (stable key order)."""
        p = self.p
        scenario: dict[str, object] = {
            "preset": p.name,
            "seed": self.seed,
            "deterministic": self.deterministic,
            "persons": p.persons,
            "as_of": p.as_of.isoformat(),
            "days": p.days,
            "window_days": p.window_days,
            "window": [p.window_start.isoformat(), p.as_of.isoformat()],
            "malformed_rate": self.malformed_rate,
            "late_rate": self.late_rate,
            "late": {k: dict(sorted(v.items())) for k, v in sorted(self.late.items())},
            "recall": self.recall,
            "high_risk_origin": p.origin,
            "regions": {r.code: {"name": r.name, "outside": r.outside} for r in p.regions},
            "visitors": int(self.city.people.n - self.city.people.n_residents),
            "counts": dict(sorted(self.counts.items())),
            "transmission": self.transmission,
            "observed": self.observed,
            "malformed": {k: dict(sorted(v.items())) for k, v in sorted(self.malformed.items())},
        }
        text = json.dumps(scenario, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        (self.out / "scenario.json").write_text(text, encoding="utf-8")
        return scenario


def simulate(
    preset: str,
    seed: int,
    out: str | Path,
    persons: int | None = None,
    malformed_rate: float = 0.001,
    recall: float = 0.9,
    progress: Progress | None = None,
    days: int = 1,
    late_rate: float = 0.03,
    deterministic: bool = True,
) -> dict[str, object]:
    """Simulate a preset city for its 14-day window and `days` − 1 further days, and write RUN `out`;
    returns the scenario (scenario.json).

    `persons` overrides the preset's resident population; `malformed_rate` is the share of agency rows
    made malformed; `recall` the probability an investigation remembers each token; `days` the number of
    daily epochs (the first on the preset's as_of); `late_rate` the share of a day's agency rows delivered
    one or two days late. `progress(step, done, total)` is called as the work advances. `deterministic`
    (scenario.json's field of that name) makes every party derive its secrets from the seed, so that an
    auditor can re-run the run byte for byte; without it they come from the operating system.
    """
    if not 0.0 <= malformed_rate < 1.0:
        raise ValueError(f"malformed_rate must be in [0, 1), got {malformed_rate}")
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    report = progress or (lambda step, done, total: None)
    if not 0.0 <= late_rate < 1.0:
        raise ValueError(f"late_rate must be in [0, 1), got {late_rate}")
    city = get_preset(preset, persons, days=days)
    run = _Run(city, seed, Path(out), malformed_rate, recall, late_rate, deterministic)
    run.out.mkdir(parents=True, exist_ok=True)
    report("building the city", 0, 1)
    run.build()
    report("building the city", 1, 1)
    run.run_days(report)
    report("writing agency and health files", 0, 1)
    cells = run.write_cells()
    population = run.population()
    run.write_population(population)
    tickets = run.tickets()
    run.write_tickets(tickets)
    hotel_stays = run.hotel_stays()
    run.write_hotel_stays(hotel_stays)
    declared = run.declarations()
    run.write_declarations(declared)
    checkins = run.write_venues(run.city_venues)
    run.write_health(cells, population, tickets, hotel_stays, checkins, declared)
    write_applicants(run.out, seed, run.p.as_of, run.p.last_day, run.ill())
    report("writing agency and health files", 1, 1)
    return run.write_scenario()
