"""Canonical risk tokens: build and parse them, and name the partition a token belongs to.

A token is a UTF-8 string of `|`-separated fields whose first field is its kind. Its partition is its
kind and the day named in the token (`static` where none): "<kind>@<day>". A partition thus holds one token
kind of one dataset and one day, with its own key and its own budget: no partition mixes kinds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

SEP = "|"
STATIC = "static"

# kind -> (agency, dataset, index of the field holding the day, or None)
KINDS: dict[str, tuple[str, str, int | None]] = {
    "cell-hour": ("carrier", "stays", 2),
    "region-day": ("carrier", "stays", 2),
    "trip": ("transport", "tickets", 2),
    "carriage": ("transport", "tickets", 2),
    "household": ("police", "population", None),
    "identity": ("police", "population", None),
    "hotel-night": ("police", "hotel_stays", 2),
    "room-night": ("police", "hotel_stays", 3),
    "place-day": ("police", "declarations", 2),
    "venue-hour": ("venues", "checkins", 2),
}
FIELD_COUNTS = {
    "cell-hour": 3,
    "region-day": 3,
    "trip": 3,
    "carriage": 4,
    "household": 2,
    "identity": 4,
    "hotel-night": 3,
    "room-night": 4,
    "place-day": 3,
    "venue-hour": 3,
}
AGENCIES = ("carrier", "transport", "police", "venues")
HOURLY = ("cell-hour", "venue-hour")
"""Kinds whose day field is a clock hour, YYYY-MM-DDTHH."""


class TokenError(ValueError):
    """A string that is not a canonical token."""


@dataclass(frozen=True)
class Token:
    """A parsed token: its kind, its fields after the kind, and its day (None if static)."""

    kind: str
    fields: tuple[str, ...]
    day: dt.date | None

    @property
    def agency(self) -> str:
        """The agency whose node records this kind of token."""
        return KINDS[self.kind][0]

    @property
    def dataset(self) -> str:
        """The agency dataset this kind of token is built from."""
        return KINDS[self.kind][1]

    @property
    def partition_id(self) -> str:
        """The partition that holds this token."""
        return partition_id(self.kind, self.day)


def dataset_kinds(dataset: str) -> tuple[str, ...]:
    """The token kinds built from an agency dataset, sorted (empty for an unknown dataset)."""
    return tuple(sorted(kind for kind, (_, name, _) in KINDS.items() if name == dataset))


def partition_id(kind: str, day: dt.date | str | None) -> str:
    """The partition id "<kind>@<YYYY-MM-DD>" (or "<kind>@static" for day None)."""
    if day is None or day == STATIC:
        return f"{kind}@{STATIC}"
    return f"{kind}@{day if isinstance(day, str) else day.isoformat()}"


def dataset_partition_ids(dataset: str, day: dt.date | None) -> list[str]:
    """The partition ids of one day (None: static) of an agency dataset, one per token kind, sorted."""
    return [partition_id(kind, day) for kind in dataset_kinds(dataset)]


def parse_partition_id(pid: str) -> tuple[str, dt.date | None]:
    """Split a partition id into its token kind and day (None for static); TokenError for an unknown kind,
    or a day on a static kind (or none on a dated one)."""
    kind, sep, day = pid.partition("@")
    if not sep or kind not in KINDS:
        kinds = ", ".join(sorted(KINDS))
        raise TokenError(f"not a partition id (<kind>@<day>, kind one of {kinds}): {pid!r}")
    dated = KINDS[kind][2] is not None
    if day == STATIC:
        if dated:
            raise TokenError(f"partition id {pid!r}: {kind} tokens are dated, not static")
        return kind, None
    if not dated:
        raise TokenError(f"partition id {pid!r}: {kind} tokens are static (<kind>@static)")
    try:
        return kind, dt.date.fromisoformat(day)
    except ValueError as exc:
        raise TokenError(f"bad day in partition id {pid!r}") from exc


def partition_dataset(pid: str) -> str:
    """The agency dataset a partition's tokens are built from."""
    kind, _ = parse_partition_id(pid)
    return KINDS[kind][1]


def parse(token: str) -> Token:
    """Parse a canonical token, checking its kind, field count and day."""
    parts = token.split(SEP)
    kind = parts[0]
    if kind not in KINDS:
        raise TokenError(f"unknown token kind {kind!r} in {token!r}")
    if len(parts) != FIELD_COUNTS[kind]:
        raise TokenError(f"{kind} token needs {FIELD_COUNTS[kind]} fields, got {len(parts)}: {token!r}")
    day_field = KINDS[kind][2]
    day: dt.date | None = None
    if day_field is not None:
        text = parts[day_field]
        if kind in HOURLY:
            if len(text) != 13 or text[10] != "T" or not text[11:].isdigit() or int(text[11:]) > 23:
                raise TokenError(f"{kind} needs YYYY-MM-DDTHH, got {text!r}")
            text = text[:10]
        try:
            day = dt.date.fromisoformat(text)
        except ValueError as exc:
            raise TokenError(f"bad date {text!r} in {token!r}") from exc
    return Token(kind=kind, fields=tuple(parts[1:]), day=day)


def cell_hour(cell_id: int, hour: dt.datetime) -> str:
    """`cell-hour|{cell_id}|{YYYY-MM-DDTHH}`."""
    return f"cell-hour|{cell_id}|{hour:%Y-%m-%dT%H}"


def region_day(region_code: str, day: dt.date) -> str:
    """`region-day|{region_code}|{YYYY-MM-DD}`."""
    return f"region-day|{region_code}|{day.isoformat()}"


def trip(trip_id: str, service_date: dt.date) -> str:
    """`trip|{trip_id}|{YYYY-MM-DD}`."""
    return f"trip|{trip_id}|{service_date.isoformat()}"


def carriage(trip_id: str, service_date: dt.date, carriage_no: int) -> str:
    """`carriage|{trip_id}|{YYYY-MM-DD}|{carriage}`."""
    return f"carriage|{trip_id}|{service_date.isoformat()}|{carriage_no}"


def household(household_id: str) -> str:
    """`household|{household_id}`."""
    return f"household|{household_id}"


def hotel_night(hotel_id: str, night: dt.date) -> str:
    """`hotel-night|{hotel_id}|{YYYY-MM-DD}`."""
    return f"hotel-night|{hotel_id}|{night.isoformat()}"


def room_night(hotel_id: str, room: str, night: dt.date) -> str:
    """`room-night|{hotel_id}|{room}|{YYYY-MM-DD}`."""
    return f"room-night|{hotel_id}|{room}|{night.isoformat()}"


def identity(subject_id: str, name: str, birth_date: dt.date) -> str:
    """`identity|{subject_id}|{name}|{birth_date}`."""
    return f"identity|{subject_id}|{name}|{birth_date.isoformat()}"


def venue_hour(venue_id: str, hour: dt.datetime) -> str:
    """`venue-hour|{venue_id}|{YYYY-MM-DDTHH}`."""
    return f"venue-hour|{venue_id}|{hour:%Y-%m-%dT%H}"


def place_day(place_id: str, day: dt.date) -> str:
    """`place-day|{place_id}|{YYYY-MM-DD}`."""
    return f"place-day|{place_id}|{day.isoformat()}"


VENUE_KINDS = ("compound", "market", "hospital", "station", "school", "other")
"""The kinds of venue in venues.parquet. A venue id starts with its kind (`hospital-411202-0003`): the kind
of a venue is public (its code hangs at its gate), and the coordinator needs it to grade a shared hour."""


def venue_kind(venue_id: str) -> str:
    """The kind a venue id names (`other` when its prefix is not a known kind)."""
    prefix = venue_id.partition("-")[0]
    return prefix if prefix in VENUE_KINDS else "other"
