"""Scenario presets: the geography, calendar, travel and epidemic parameters of a synthetic city.

All presets share Sanmenxia's geography (its six county-level divisions and real region codes) and
the January 2020 calendar: a 14-day window ending 2020-01-31, with the Spring Festival holiday from
2020-01-24 and the make-up working Sunday of 2020-01-19. Travellers arrive from Wuhan (the high-risk
origin) in the days before its lockdown on 2020-01-23.

The epidemic is a real city's early outbreak: a few imported cases, their households and first local
transmissions, and people keeping to their homes from the Spring Festival on. Each parameter is a rate
with a meaning (a share of arrivals infected, a probability per day, per hour, per trip or per night)
and, where one exists, a published value beside it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass


class PresetError(ValueError):
    """An unknown preset name or an unusable parameter."""


@dataclass(frozen=True)
class Region:
    """A region: a county of the city (with a population share) or an outside region (with a position)."""

    code: str
    name: str
    share: float = 0.0
    outside: bool = False
    x_km: float = 0.0
    y_km: float = 0.0
    id_prefixes: tuple[str, ...] = ()
    flights: bool = False
    medium_from: dt.date | None = None  # an outside region listed as medium-risk from this day on

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Six-digit ID prefixes used by people registered in this region."""
        return self.id_prefixes or (self.code,)


COUNTIES: tuple[Region, ...] = (
    Region("411202", "湖滨区", 0.17),
    Region("411203", "陕州区", 0.15),
    Region("411221", "渑池县", 0.15),
    Region("411224", "卢氏县", 0.16),
    Region("411281", "义马市", 0.07),
    Region("411282", "灵宝市", 0.30),
)
# Outside regions: the origin, and cities travellers come from or go to. Zhengzhou and Beijing, with
# dozens of confirmed cases and local transmission by the end of January 2020, are on the list of
# medium-risk regions from late January.
OUTSIDE: tuple[Region, ...] = (
    Region(
        "420100",
        "武汉市",
        outside=True,
        x_km=330.0,
        y_km=-430.0,
        flights=True,
        id_prefixes=("420102", "420103", "420104", "420105", "420106", "420111"),
    ),
    Region(
        "410100",
        "郑州市",
        outside=True,
        x_km=240.0,
        y_km=-20.0,
        id_prefixes=("410102", "410103", "410105"),
        medium_from=dt.date(2020, 1, 28),
    ),
    Region("410300", "洛阳市", outside=True, x_km=120.0, y_km=-30.0, id_prefixes=("410302", "410305")),
    Region(
        "610100", "西安市", outside=True, x_km=-230.0, y_km=-40.0, id_prefixes=("610102", "610103", "610113")
    ),
    Region(
        "110100",
        "北京市",
        outside=True,
        x_km=560.0,
        y_km=600.0,
        flights=True,
        id_prefixes=("110101", "110105", "110108"),
        medium_from=dt.date(2020, 1, 26),
    ),
)
ORIGIN = "420100"


@dataclass(frozen=True)
class Preset:
    """Every parameter of a scenario; `persons` is the size of the resident population."""

    name: str
    persons: int
    counties: tuple[Region, ...] = COUNTIES
    outside: tuple[Region, ...] = OUTSIDE
    origin: str = ORIGIN
    as_of: dt.date = dt.date(2020, 1, 31)
    window_days: int = 14
    days: int = 1  # epochs: the window ending on as_of, then one more day each
    holidays: tuple[dt.date, ...] = tuple(dt.date(2020, 1, 24) + dt.timedelta(days=i) for i in range(10))
    extra_workdays: tuple[dt.date, ...] = (dt.date(2020, 1, 19),)
    lockdown: dt.date = dt.date(2020, 1, 23)
    # From the second day of the Spring Festival, two days after the origin's lockdown, public venues
    # closed, family visits and gatherings were called off and compounds and villages closed to
    # outsiders: people went out for necessities only. `distancing` is the share of the usual outings
    # (errands, evenings out, visits, visitors' errands) no longer made from `distancing_from` on;
    # intra-city travel in Chinese cities fell by well over half in late January 2020.
    distancing_from: dt.date = dt.date(2020, 1, 25)
    distancing: float = 0.6
    # geography
    persons_per_cell: float = 40.0
    cell_km: float = 0.8
    persons_per_hotel: int = 2500
    # travel (rates per resident)
    inbound_rate: float = 0.005  # arrive from the origin before its lockdown
    returnee_share: float = 0.6  # of those, residents coming home; the rest visit and stay in hotels
    business_rate: float = 0.0004  # visitors from other regions arriving per day, staying in hotels
    outbound_rate: float = 0.0006  # residents leaving for another region per day
    # epidemic: importation. `seed_attack` is the share of the travellers from the origin who arrive
    # infected. About 0.7 % of Wuhan was infected by 25 January 2020 (Wu, Leung and Leung, Lancet 2020:
    # some 76,000 infections in 11 M people), which gives a real city's handful of imported cases; the
    # smaller presets zoom in on the part of a city where imported infections landed, with a higher share.
    # The scenario is an outbreak, however small the city: at least `min_seeds` travellers arrive infected
    # and fall ill (index cases).
    seed_attack: float = 0.007
    min_seeds: int = 3
    # epidemic: transmission, while infectious (from two days before onset, or from the second day of an
    # asymptomatic infection, until isolation on the report day). Calibrated so that the rates a run
    # observes (`observed` in scenario.json; see Epidemic.observed) reproduce the contact tracing of early
    # 2020: Bi et al., Lancet Infect Dis 2020 (Shenzhen: household 11.2 %, all close contacts 6.6 %, serial
    # interval 6.3 days, isolation 4.6 days after onset) and Luo et al., Ann Intern Med 2020 (Guangzhou:
    # household 10.3 %, all close contacts 3.7 %, public transport 0.1 %); the README sets them side by side.
    household_per_day: float = 0.022  # per day at home with an infectious member: 11 % of household members
    # over an index case's infectious period
    cell_hour_beta: float = 1.5e-3  # per hour shared with one infectious person in a public place
    # (errands, meals, evenings out, stations), for a cell of 40 residents; scaled by 40 / persons_per_cell,
    # since a denser cell dilutes the chance of meeting the infectious person; the hours are minutes-weighted
    work_beta_factor: float = 0.4  # workplaces and schools, relative to public places (transit: 0.5)
    carriage_per_trip: float = 0.002  # per trip in the same carriage as an infectious passenger: the
    # carriage as a whole (Hu et al., Clin Infect Dis 2020: 0.3 % on trains, 3.5 % for adjacent seats;
    # Luo et al.: 0.1 % on public transport); travelling families are household contacts as well
    room_per_night: float = 0.05  # per night sharing a hotel room with an infectious guest
    hospital_hour_beta: float = 0.012  # per hour checked in at the same hospital as one infectious person
    # (the fever clinic's waiting room, where the not-yet-reported go with their symptoms): about 1 % of
    # those sharing an hour with a case are infected, as among Luo et al.'s health-care contacts (1.0 %)
    market_hour_beta: float = 0.006  # per hour at the same market as one infectious person: a crowd at
    # arm's length for minutes at a time, between a carriage (Luo et al.: 0.1 % on public transport) and
    # a shared meal; markets stayed open for necessities after public venues closed
    visit_per_visit: float = 0.06  # per visit between friends, one of them infectious
    report_delay_days: float = 4.6  # mean days from onset to report and isolation (Bi et al.: 4.6)
    asymptomatic: float = 0.2  # infections that never show symptoms (never reported; half as infectious)
    confirmed_share: float = 0.8  # reported symptomatic infections confirmed; the rest stay suspected
    stay_home_after_onset: float = 0.4  # the symptomatic who stay at home from onset until reported
    # epidemic: suspected cases who are not infected. The 2020 case definition asked for a fever and an
    # epidemiological link: travellers from the origin with another fever (the flu season: about 2 % of them
    # over their days in the city) are reported at `suspect_rate_traveller` per day after arrival; other
    # residents, whose link is weaker (a contact they cannot name), at the far lower `suspect_rate`
    suspect_rate_traveller: float = 0.002
    suspect_rate: float = 1e-6
    # risk regions: the origin is high-risk; outside regions with `medium_from` are medium-risk from that
    # day; a county of the city is listed medium-risk once local transmission is established there:
    # `medium_min_local` confirmed cases infected in the city reported within the window (imported cases
    # alone, traced and isolated, do not make a county medium-risk)
    medium_min_local: int = 10

    @property
    def window_start(self) -> dt.date:
        """The first day of the window."""
        return self.as_of - dt.timedelta(days=self.window_days - 1)

    @property
    def sim_days(self) -> int:
        """Days simulated: the first window and each further epoch's day."""
        return self.window_days + self.days - 1

    @property
    def last_day(self) -> dt.date:
        """The last day simulated (the last epoch's date)."""
        return self.as_of + dt.timedelta(days=self.days - 1)

    @property
    def regions(self) -> tuple[Region, ...]:
        """Counties first, then outside regions."""
        return self.counties + self.outside


PRESETS: dict[str, Preset] = {
    # a town's worth of the city around its imported cases: about 100 arrivals from the origin, 10 infected
    "city-20k": Preset(
        "city-20k",
        20_000,
        counties=(COUNTIES[0], COUNTIES[1], COUNTIES[5]),
        persons_per_cell=25.0,
        cell_km=0.7,
        seed_attack=0.1,
    ),
    # 1,200 arrivals from the origin, about 24 infected: a fifth of city-20k's imports per resident
    "city-240k": Preset("city-240k", 240_000, persons_per_cell=40.0, cell_km=0.9, seed_attack=0.02),
    # the real city: 4,800 arrivals from the origin, infected as Wuhan was (about 34)
    "sanmenxia": Preset("sanmenxia", 2_400_000, persons_per_cell=100.0, cell_km=0.65, inbound_rate=0.002),
}


def get_preset(name: str, persons: int | None = None, **overrides: object) -> Preset:
    """The named preset, with `persons` and any other field overridden."""
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    changes: dict[str, object] = dict(overrides)
    days = changes.get("days", 1)
    if isinstance(days, int) and days < 1:
        raise PresetError(f"days must be at least 1, got {days}")
    if persons is not None:
        if persons < 100:
            raise PresetError(f"persons must be at least 100, got {persons}")
        changes["persons"] = persons
    try:
        return dataclasses.replace(PRESETS[name], **changes)  # type: ignore[arg-type]
    except TypeError as exc:
        raise PresetError(str(exc)) from exc
