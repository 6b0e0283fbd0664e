"""The data contracts' Parquet schemas (the design's *Data contracts*), by dataset: what the simulation
writes, what the agencies' services deliver, and what the nodes and the plaintext oracle read."""

from __future__ import annotations

import pyarrow as pa

SCHEMAS: dict[str, pa.Schema] = {
    "stays": pa.schema(
        [
            ("subject_id", pa.string()),
            ("cell_id", pa.int32()),
            ("start", pa.timestamp("s")),
            ("end", pa.timestamp("s")),
        ]
    ),
    "cells": pa.schema(
        [
            ("cell_id", pa.int32()),
            ("region_code", pa.string()),
            ("x_km", pa.float32()),
            ("y_km", pa.float32()),
        ]
    ),
    "tickets": pa.schema(
        [
            ("subject_id", pa.string()),
            ("trip_id", pa.string()),
            ("service_date", pa.date32()),
            ("carriage", pa.int16()),
            ("seat", pa.string()),
            ("origin", pa.string()),
            ("destination", pa.string()),
            ("depart", pa.timestamp("s")),
            ("arrive", pa.timestamp("s")),
        ]
    ),
    "population": pa.schema(
        [
            ("subject_id", pa.string()),
            ("name", pa.string()),
            ("birth_date", pa.date32()),
            ("household_id", pa.string()),
            ("phone", pa.string()),
        ]
    ),
    "hotel_stays": pa.schema(
        [
            ("subject_id", pa.string()),
            ("hotel_id", pa.string()),
            ("room", pa.string()),
            ("check_in", pa.date32()),
            ("nights", pa.int16()),
        ]
    ),
    "declarations": pa.schema(
        [
            ("place_id", pa.string()),
            ("subject_id", pa.string()),
            ("role", pa.string()),
            ("from_date", pa.date32()),
            ("to_date", pa.date32()),
            ("declared_by", pa.string()),
        ]
    ),
    "venues": pa.schema(
        [
            ("venue_id", pa.string()),
            ("kind", pa.string()),
            ("name", pa.string()),
            ("region_code", pa.string()),
            ("cell_id", pa.int32()),
        ]
    ),
    "checkins": pa.schema(
        [
            ("subject_id", pa.string()),
            ("venue_id", pa.string()),
            ("at", pa.timestamp("s")),
            ("leave", pa.timestamp("s")),
        ]
    ),
    "cases": pa.schema(
        [
            ("case_id", pa.string()),
            ("subject_id", pa.string()),
            ("status", pa.string()),
            ("onset_date", pa.date32()),
            ("report_date", pa.date32()),
        ]
    ),
    "investigations": pa.schema(
        [("case_id", pa.string()), ("token", pa.string()), ("recorded_on", pa.date32())]
    ),
    "risk_regions": pa.schema(
        [
            ("region_code", pa.string()),
            ("level", pa.string()),
            ("from_date", pa.date32()),
            ("to_date", pa.date32()),
        ]
    ),
    "infections": pa.schema(
        [("subject_id", pa.string()), ("infected_at", pa.timestamp("s")), ("infector_id", pa.string())]
    ),
    "matches": pa.schema(
        [
            ("subject_id", pa.string()),
            ("agency", pa.string()),
            ("token", pa.string()),
            ("case_id", pa.string()),
        ]
    ),
}
