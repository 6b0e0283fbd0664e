"""What a host may send: a place and the people declared at it, checked field by field and row by row (the
same models serve the JSON API and the HTML form; a problem names the row it is in)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from proto import ids
from proto.tokenize import MAX_ID_BYTES
from service.citizen.forms import PersonName, Strict, SubjectId, first_problem

DWELLING = re.compile(r"^dwelling-([0-9]{6})-([0-9]{7})$")
"""A rented home, named after the household registered there: `dwelling-<household id>`, the household id
being the register's `<county code>-<7 digits>`."""
WORKPLACE = re.compile(r"^workplace-([1-9][0-9]{0,9})-([0-9]{1,5})$")
"""An employer's workplace: `workplace-<cell id>-<number>`, as the simulation names them."""
ROLE_OF_PLACE = {"dwelling": "tenant", "workplace": "employee"}
"""Who may be declared at each kind of place: tenants at a dwelling, employees at a workplace."""
MAX_ROWS = 50
"""People one declaration may name."""
EARLIEST_FROM = dt.timedelta(days=366)
"""How far back a declaration may start (before the run's date)."""
LATEST_FROM = dt.timedelta(days=31)
"""How far ahead a declaration may start (after the run's date)."""
LONGEST = dt.timedelta(days=5 * 366)
"""The longest a declared tenancy or employment may run."""
TODAY = "today"
"""The validation context key holding the run's date, which the date bounds are relative to."""


def place_kind(place_id: str) -> str | None:
    """ "dwelling" or "workplace" for a well-formed place id, else None."""
    if DWELLING.match(place_id):
        return "dwelling"
    if WORKPLACE.match(place_id) and int(place_id.split("-")[1]) < 2**31:
        return "workplace"
    return None


class DeclaredPerson(Strict):
    """One person declared at the place: id number and name as in the register, role and dates."""

    subject_id: SubjectId = Field(examples=["411202198607121763"])
    name: PersonName = Field(examples=["许莉"])
    role: Literal["tenant", "employee"]
    from_date: dt.date = Field(description="first day (inclusive)", examples=["2020-01-20"])
    to_date: dt.date = Field(
        description="last day (inclusive), not before from_date", examples=["2020-12-31"]
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> DeclaredPerson:
        if not ids.is_valid(self.subject_id):
            raise ValueError("subject_id: the check character does not match the ID number")
        if self.to_date < self.from_date:
            raise ValueError(f"to_date: {self.to_date} is before from_date {self.from_date}")
        if self.to_date - self.from_date > LONGEST:
            raise ValueError(f"to_date: at most {LONGEST.days} days after from_date")
        today = (info.context or {}).get(TODAY)
        if isinstance(today, dt.date) and not today - EARLIEST_FROM <= self.from_date <= today + LATEST_FROM:
            first, last = today - EARLIEST_FROM, today + LATEST_FROM
            raise ValueError(f"from_date: must lie between {first} and {last} (the run's date is {today})")
        return self


class DeclarationRequest(Strict):
    """A host's declaration: the place, and the tenants or staff living or working there."""

    place_id: str = Field(
        min_length=1,
        max_length=MAX_ID_BYTES,
        description="dwelling-<household id> (a rented home) or workplace-<cell id>-<n> (an employer's site)",
        examples=["dwelling-411202-0000006"],
    )
    people: list[DeclaredPerson] = Field(min_length=1, max_length=MAX_ROWS)

    @field_validator("place_id")
    @classmethod
    def _place(cls, value: str) -> str:
        if place_kind(value) is None:
            raise ValueError(
                "must be dwelling-<county code>-<7 digits> (e.g. dwelling-411202-0000006) or "
                "workplace-<cell id>-<number> (e.g. workplace-10018-0)"
            )
        return value

    @model_validator(mode="after")
    def _rows(self) -> DeclarationRequest:
        kind = place_kind(self.place_id)
        seen: dict[str, int] = {}
        for row, person in enumerate(self.people, 1):
            if kind is not None and person.role != ROLE_OF_PLACE[kind]:
                raise ValueError(
                    f"row {row}: role: a {kind} declares {ROLE_OF_PLACE[kind]}s, not {person.role}s"
                )
            if person.subject_id in seen:
                raise ValueError(
                    f"row {row}: subject_id: the same ID number as row {seen[person.subject_id]}"
                )
            seen[person.subject_id] = row
        return self


def request_schema() -> dict[str, Any]:
    """The JSON schema of a declaration with its nested models written out in place (for the OpenAPI
    document, which has no `$defs` of its own)."""
    schema = DeclarationRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return dict(inline(schema))


def parse(body: object, today: dt.date) -> DeclarationRequest:
    """The declaration in `body` with its dates bounded around the run's date `today` (ValidationError)."""
    return DeclarationRequest.model_validate(body, context={TODAY: today})


def problem(error: ValidationError) -> str:
    """One line naming the first problem, its row counted from 1 (`people.2.to_date` → `row 3: to_date`)."""
    detail = error.errors()[0]
    loc = [str(p) for p in detail.get("loc", ())]
    if len(loc) >= 2 and loc[0] == "people" and loc[1].isdigit():
        field = ".".join(loc[2:])
        message = str(detail.get("msg", "invalid")).removeprefix("Value error, ")
        where = f"row {int(loc[1]) + 1}"
        return (
            f"{where}: {field}: {message}"
            if field and not message.startswith(field)
            else f"{where}: {message}"
        )
    return first_problem(error)
