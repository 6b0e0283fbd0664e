"""Travel: who comes and goes when, on which train or flight, in which carriage and seat, in which hotel room.

Travellers from the high-risk origin arrive in the first days of the window (residents coming home for
the Spring Festival, and visitor families who stay in hotels); business visitors from other regions come
for a few nights; some residents leave for a few days. Each region has a station (and, for some, an
airport) with daily scheduled services to and from the city's hub; a ticket names the service, its
date, a carriage (for flights: a five-row cabin zone) and a seat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulation.city import City
from simulation.presets import Preset

TRAIN, FLIGHT = 0, 1
KIND_HOME, KIND_HOTEL, KIND_AWAY = 0, 1, 2
MINUTES_PER_DAY = 1440


@dataclass
class Services:
    """Daily scheduled services: trip id, origin and destination region, mode, departure minute, duration."""

    trip_id: np.ndarray
    origin: np.ndarray
    dest: np.ndarray
    mode: np.ndarray
    depart: np.ndarray  # minute of the day
    minutes: np.ndarray


@dataclass
class Journeys:
    """One row per person and leg: the service taken, when, between which cells, and the new base."""

    person: np.ndarray
    day: np.ndarray  # window day index
    service: np.ndarray
    depart: np.ndarray  # minutes since the window's start
    arrive: np.ndarray
    from_cell: np.ndarray
    to_cell: np.ndarray
    base_cell: np.ndarray
    base_kind: np.ndarray
    carriage: np.ndarray  # int16
    seat: np.ndarray  # object str


@dataclass
class HotelStays:
    """One row per guest and stay: hotel index, room index, check-in day (window index), nights."""

    person: np.ndarray
    hotel: np.ndarray
    room: np.ndarray
    check_in: np.ndarray
    nights: np.ndarray


@dataclass
class Travel:
    """Everything about travel, plus where everyone starts the window and who comes from the origin."""

    services: Services
    journeys: Journeys
    hotel_stays: HotelStays
    start_cell: np.ndarray
    start_kind: np.ndarray
    from_origin: np.ndarray  # person indices of the travellers from the high-risk origin
    arrival_minute: np.ndarray  # their arrival, minutes since the window's start


def visitor_counts(preset: Preset, rng: np.random.Generator) -> np.ndarray:
    """Number of visitors (non-residents) per outside region: families from the origin, business elsewhere."""
    counts = np.zeros(len(preset.outside), dtype=np.int64)
    origin = _outside_index(preset, preset.origin)
    n_in = round(preset.inbound_rate * preset.persons)
    counts[origin] = n_in - round(n_in * preset.returnee_share)
    others = [j for j in range(len(preset.outside)) if j != origin]
    n_business = rng.poisson(preset.business_rate * preset.persons * preset.sim_days)
    counts[others] += np.bincount(rng.integers(0, len(others), n_business), minlength=len(others))
    return counts


def _outside_index(preset: Preset, code: str) -> int:
    """Index of an outside region within preset.outside."""
    return [r.code for r in preset.outside].index(code)


def build_services(preset: Preset, city: City, rng: np.random.Generator) -> Services:
    """Six trains a day each way between every outside region and the hub, and two flights where flown."""
    cells = city.cells
    hub = 0
    rows = []
    numbers = rng.permutation(np.arange(100, 10000))
    k = 0
    for j, region in enumerate(preset.outside):
        r = len(preset.counties) + j
        dist = float(
            np.hypot(
                cells.x[cells.station[r]] - cells.x[cells.station[hub]],
                cells.y[cells.station[r]] - cells.y[cells.station[hub]],
            )
        )
        plans = [(TRAIN, 6, 25 + dist / 250 * 60)]
        if region.flights:
            plans.append((FLIGHT, 2, 50 + dist / 700 * 60))
        for mode, count, minutes in plans:
            for a, b in ((r, hub), (hub, r)):
                latest = MINUTES_PER_DAY - 60 - minutes
                departs = np.linspace(390, latest, count) + rng.integers(-20, 21, count)
                for dep in departs:
                    prefix = "G" if mode == TRAIN else ("CZ", "MU", "CA", "HU")[int(numbers[k]) % 4]
                    rows.append((f"{prefix}{numbers[k]}", a, b, mode, int(dep), round(minutes)))
                    k += 1
    frame = pd.DataFrame(rows, columns=["trip_id", "origin", "dest", "mode", "depart", "minutes"])
    return Services(*(frame[c].to_numpy() for c in frame.columns))


def plan_travel(preset: Preset, city: City, rng: np.random.Generator) -> Travel:
    """Plan every journey, ticket and hotel stay of the window, and everyone's starting place."""
    people, cells, hotels = city.people, city.cells, city.hotels
    n_counties = len(preset.counties)
    n_days = preset.sim_days
    origin = n_counties + _outside_index(preset, preset.origin)
    lockdown_day = min((preset.lockdown - preset.window_start).days, n_days - 1)
    start_cell = people.home.copy()
    start_kind = np.full(people.n, KIND_HOME, dtype=np.int8)
    legs: list[pd.DataFrame] = []

    def leg(
        person: np.ndarray,
        group: np.ndarray,
        day: np.ndarray,
        a: np.ndarray | int,
        b: np.ndarray | int,
        base_cell: np.ndarray,
        base_kind: np.ndarray | int,
    ) -> None:
        legs.append(
            pd.DataFrame(
                {
                    "person": person,
                    "group": group,
                    "day": day,
                    "a": a,
                    "b": b,
                    "base_cell": base_cell,
                    "base_kind": base_kind,
                }
            )
        )

    # travellers from the origin: residents coming home, and visitor families
    age = (np.datetime64(preset.as_of) - people.birth.astype("datetime64[D]")).astype(np.int64) / 365.25
    n_in = round(preset.inbound_rate * preset.persons)
    n_ret = round(n_in * preset.returnee_share)
    candidates = np.nonzero((age[: people.n_residents] >= 18) & (age[: people.n_residents] <= 45))[0]
    returnees = np.sort(rng.choice(candidates, size=min(n_ret, len(candidates)), replace=False))
    visitors = np.nonzero(people.region == origin)[0]
    group_sizes = rng.choice([1, 2, 3], size=len(visitors), p=[0.5, 0.3, 0.2])
    v_group = np.repeat(np.arange(len(visitors)), group_sizes)[: len(visitors)]
    groups = np.concatenate([np.arange(len(returnees)), len(returnees) + v_group])
    travellers = np.concatenate([returnees, visitors])
    n_groups = int(groups.max(initial=-1)) + 1
    weights = 1.0 + np.arange(lockdown_day + 1)
    g_day = rng.choice(lockdown_day + 1, size=n_groups, p=weights / weights.sum())
    g_cell = cells.sample_in_regions(np.full(n_groups, origin), rng)
    start_cell[travellers] = g_cell[groups]
    start_kind[travellers] = KIND_AWAY
    hub = np.zeros(len(travellers), dtype=np.int64)
    is_visitor = np.arange(len(travellers)) >= len(returnees)

    # hotel guests: origin visitors (through the window) and business visitors
    business = np.nonzero((people.role == 4) & (people.region != origin))[0]
    b_day = rng.integers(0, n_days, len(business))
    b_nights = rng.integers(1, 5, len(business))
    guests = np.concatenate([travellers[is_visitor], business])
    guest_group = np.concatenate([groups[is_visitor], n_groups + np.arange(len(business))])
    guest_day = np.concatenate([g_day[groups[is_visitor]], b_day])
    v_nights = n_days - g_day + rng.integers(0, 7, n_groups)
    guest_nights = np.concatenate([v_nights[groups[is_visitor]], b_nights])
    stays = _assign_rooms(hotels.rooms, guests, guest_group, guest_day, guest_nights, rng)
    hotel_cell = np.full(people.n, -1, dtype=np.int32)
    hotel_cell[stays.person] = hotels.cell[stays.hotel]

    base = np.where(is_visitor, hotel_cell[travellers], people.home[travellers])
    kind = np.where(is_visitor, KIND_HOTEL, KIND_HOME)
    leg(travellers, groups, g_day[groups], np.full(len(travellers), origin), hub, base, kind)

    # business visitors: start in their own region, come, stay, and go back
    start_cell[business] = cells.sample_in_regions(people.region[business], rng)
    start_kind[business] = KIND_AWAY
    b_group = 10 * people.n + business
    leg(
        business,
        b_group,
        b_day,
        people.region[business],
        np.zeros(len(business)),
        hotel_cell[business],
        KIND_HOTEL,
    )
    back = b_day + b_nights < n_days
    leg(
        business[back],
        b_group[back],
        (b_day + b_nights)[back],
        np.zeros(back.sum()),
        people.region[business][back],
        start_cell[business][back],
        KIND_AWAY,
    )

    # residents going away for a few days (never to the origin)
    others = np.array([n_counties + j for j in range(len(preset.outside)) if n_counties + j != origin])
    pool = np.setdiff1d(np.nonzero(age[: people.n_residents] >= 20)[0], returnees)
    n_out = min(rng.poisson(preset.outbound_rate * preset.persons * n_days), len(pool))
    out = np.sort(rng.choice(pool, size=n_out, replace=False))
    o_day = rng.integers(0, n_days - 1, n_out)
    o_back = o_day + rng.integers(1, 5, n_out)
    dest = others[rng.integers(0, len(others), n_out)]
    o_group = 20 * people.n + out
    leg(out, o_group, o_day, np.zeros(n_out), dest, cells.sample_in_regions(dest, rng), KIND_AWAY)
    ret = o_back < n_days
    leg(out[ret], o_group[ret], o_back[ret], dest[ret], np.zeros(ret.sum()), people.home[out[ret]], KIND_HOME)

    services = build_services(preset, city, rng)
    journeys = _book(preset, city, services, pd.concat(legs, ignore_index=True), rng)
    order = np.argsort(travellers, kind="stable")
    jp = pd.Series(journeys.arrive, index=journeys.person)
    arrival = jp.groupby(level=0).min().reindex(travellers[order]).to_numpy()
    return Travel(
        services=services,
        journeys=journeys,
        hotel_stays=stays,
        start_cell=start_cell,
        start_kind=start_kind,
        from_origin=travellers[order],
        arrival_minute=arrival.astype(np.int64),
    )


def _assign_rooms(
    rooms: np.ndarray,
    person: np.ndarray,
    group: np.ndarray,
    day: np.ndarray,
    nights: np.ndarray,
    rng: np.random.Generator,
) -> HotelStays:
    """A hotel (by size) and a room per group, rooms handed out in turn so that groups rarely share."""
    groups, first = np.unique(group, return_index=True)
    g_hotel = rng.choice(len(rooms), size=len(groups), p=rooms / rooms.sum())
    g_day = day[first]
    order = np.lexsort((groups, g_day))
    frame = pd.DataFrame({"hotel": g_hotel[order]})
    turn = frame.groupby("hotel").cumcount().to_numpy()
    offset = rng.integers(0, rooms)
    g_room = np.empty(len(groups), dtype=np.int64)
    g_room[order] = (offset[g_hotel[order]] + turn) % rooms[g_hotel[order]]
    idx = np.searchsorted(groups, group)
    out = HotelStays(person=person, hotel=g_hotel[idx], room=g_room[idx], check_in=day, nights=nights)
    keep = np.lexsort((person, out.check_in))
    return HotelStays(*(getattr(out, f)[keep] for f in ("person", "hotel", "room", "check_in", "nights")))


def _book(
    preset: Preset, city: City, services: Services, legs: pd.DataFrame, rng: np.random.Generator
) -> Journeys:
    """Choose a service per group and leg, then a carriage per group and seats per passenger."""
    cells = city.cells
    legs = legs.astype({"a": np.int64, "b": np.int64}).sort_values(["day", "group", "person"], kind="stable")
    legs = legs.reset_index(drop=True)
    key = legs[["day", "group", "a", "b"]].drop_duplicates()
    route = pd.DataFrame(
        {
            "origin": services.origin,
            "dest": services.dest,
            "mode": services.mode,
            "service": np.arange(len(services.trip_id)),
        }
    )
    flights = set(
        zip(route.origin[route["mode"] == FLIGHT], route.dest[route["mode"] == FLIGHT], strict=True)
    )
    has_flight = np.array([(a, b) in flights for a, b in zip(key.a, key.b, strict=True)], dtype=bool)
    mode = np.where(has_flight & (rng.random(len(key)) < 0.3), FLIGHT, TRAIN)
    choice = rng.random(len(key))
    service = np.empty(len(key), dtype=np.int64)
    for i, (a, b, m) in enumerate(zip(key.a, key.b, mode, strict=True)):
        options = route.service[(route.origin == a) & (route.dest == b) & (route["mode"] == m)].to_numpy()
        service[i] = options[int(choice[i] * len(options))]
    key = key.assign(service=service)
    legs = legs.merge(key, on=["day", "group", "a", "b"], how="left")

    # carriages: passengers of a service and day fill about ten to a carriage, families together
    legs = legs.sort_values(["service", "day", "group", "person"], kind="stable").reset_index(drop=True)
    per_trip = legs.groupby(["service", "day"])["person"].transform("size").to_numpy()
    is_flight = services.mode[legs.service.to_numpy()] == FLIGHT
    cars = np.where(is_flight, np.clip(np.ceil(per_trip / 12), 1, 6), np.clip(np.ceil(per_trip / 10), 1, 16))
    first_of_group = ~legs.duplicated(["service", "day", "group"])
    g_car = np.where(first_of_group, 1 + (rng.random(len(legs)) * cars).astype(np.int64), 0)
    legs["carriage"] = pd.Series(np.where(first_of_group, g_car, np.nan)).ffill().astype(np.int16).to_numpy()
    rank = legs.groupby(["service", "day", "carriage"]).cumcount().to_numpy()
    offset = rng.integers(0, 90, len(legs))
    capacity = np.where(is_flight, 30, 90)
    pos = (rank * 7 + offset[legs.groupby(["service", "day"]).ngroup().to_numpy()]) % capacity
    train_seat = np.char.add(np.char.zfill((pos // 5 + 1).astype(str), 2), np.array(list("ABCDF"))[pos % 5])
    row = (legs.carriage.to_numpy() - 1) * 5 + pos // 6 + 1
    flight_seat = np.char.add(row.astype(str), np.array(list("ABCDEF"))[pos % 6])
    seat = np.where(is_flight, flight_seat, train_seat).astype(object)

    svc = legs.service.to_numpy()
    depart = legs.day.to_numpy() * MINUTES_PER_DAY + services.depart[svc]
    stations = np.where(is_flight, 1, 0)
    port = np.stack([cells.station, cells.airport])
    return Journeys(
        person=legs.person.to_numpy(np.int64),
        day=legs.day.to_numpy(np.int64),
        service=svc,
        depart=depart.astype(np.int64),
        arrive=(depart + services.minutes[svc]).astype(np.int64),
        from_cell=port[stations, legs.a.to_numpy()].astype(np.int32),
        to_cell=port[stations, legs.b.to_numpy()].astype(np.int32),
        base_cell=legs.base_cell.to_numpy(np.int32),
        base_kind=legs.base_kind.to_numpy(np.int8),
        carriage=legs.carriage.to_numpy(np.int16),
        seat=seat,
    )
