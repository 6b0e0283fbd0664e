"""What a venue operator and a visitor may send: a venue to register (its place as a cell, or a position
placed on the nearest cell of its county, as the simulation places venues), and a scanned venue QR."""

from __future__ import annotations

import unicodedata
from typing import Literal

from pydantic import Field, field_validator, model_validator

from proto.regions import COUNTIES
from service.citizen.forms import Strict

Kind = Literal["compound", "market", "hospital", "station", "school", "other"]
"""`proto.tokens.VENUE_KINDS`, spelled out for the schema (a unit test keeps the two equal)."""


class VenueRequest(Strict):
    """Register a venue: its name, kind and county, and where it is (a cell id, or x/y in km)."""

    name: str = Field(min_length=2, max_length=40, examples=["湖滨区建设路小区"])
    kind: Kind
    region_code: str = Field(description="its county (GB/T 2260)", examples=["411202"])
    cell_id: int | None = Field(default=None, ge=0, lt=2**31, description="the cell the venue lies in")
    x_km: float | None = Field(default=None, ge=-1000, le=1000, description="position east, km")
    y_km: float | None = Field(default=None, ge=-1000, le=1000, description="position north, km")
    address: str = Field(default="", max_length=100, description="street address, printed under the QR")

    @field_validator("name", "address")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in value):
            raise ValueError("holds control or separator characters")
        return value

    @field_validator("region_code")
    @classmethod
    def _county(cls, value: str) -> str:
        if value not in COUNTIES:
            raise ValueError(f"not a county of the city; expected one of {', '.join(COUNTIES)}")
        return value

    @model_validator(mode="after")
    def _placed(self) -> VenueRequest:
        has_xy = self.x_km is not None and self.y_km is not None
        if self.cell_id is None and not has_xy:
            raise ValueError("place: give the venue's cell_id, or its position x_km and y_km")
        if (self.x_km is None) != (self.y_km is None):
            raise ValueError("place: give both x_km and y_km")
        return self


class CheckinRequest(Strict):
    """Check in at a venue: the scanned venue QR, and which of your codes (yours or a family member's)."""

    venue_qr: str = Field(min_length=1, max_length=1024, description="the text of the venue's QR code")
    code_id: str = Field(
        min_length=1, max_length=64, description="one of your codes (GET /api/v1/citizen/codes)"
    )
