"""The risk set: which tokens the coordinator asks about, and on behalf of which case.

One rule, shared by the coordinator and the plaintext oracle (docs/tokens.md, "A match"): every investigation
token whose day lies in the window (or that names no day), plus a `region-day` token for every risk
region and every day of the window that falls within the region's from/to dates. The window is the
`window_days` days ending on `as_of`, and only records known by `as_of` count (`known_by`): cases
reported by then (`report_date`) and investigation tokens recorded by then (`recorded_on`).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from proto import tokens as tk

COLUMNS = ("token", "case_id", "case_subject_id", "partition_id", "agency", "kind")


class RiskSetError(ValueError):
    """Health records that cannot yield a risk set (an unknown case, a malformed token or date)."""


def window(as_of: dt.date, window_days: int) -> tuple[dt.date, dt.date]:
    """The window's first and last day (inclusive): the `window_days` days ending on `as_of`."""
    if window_days < 1:
        raise RiskSetError(f"window_days must be at least 1, got {window_days}")
    return as_of - dt.timedelta(days=window_days - 1), as_of


def _as_date(value: object, what: str) -> dt.date:
    """A datetime.date from a date, datetime, pandas Timestamp or ISO string."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise RiskSetError(f"bad {what}: {value!r}") from exc
    if pd.isna(stamp):
        raise RiskSetError(f"missing {what}")
    return stamp.date()


def _on_or_before(column: pd.Series, as_of: dt.date, what: str) -> pd.Series:
    """Rows whose date column is on or before `as_of` (RiskSetError on a missing or unreadable date)."""
    try:
        dates = pd.to_datetime(column, errors="raise")
    except (TypeError, ValueError) as exc:
        raise RiskSetError(f"bad {what}: {exc}") from None
    if dates.isna().any():
        raise RiskSetError(f"missing {what} in {int(dates.isna().sum())} row(s)")
    return dates <= pd.Timestamp(as_of)


def known_by(
    investigations: pd.DataFrame, cases: pd.DataFrame, as_of: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cases reported by `as_of` (`report_date`) and the investigation tokens recorded by then
    (`recorded_on`) of those cases; a table without that column is taken whole (records of one day)."""
    if "report_date" in cases.columns:
        cases = cases[_on_or_before(cases["report_date"], as_of, "report_date of a case").to_numpy()]
    if "recorded_on" in investigations.columns:
        recorded = _on_or_before(investigations["recorded_on"], as_of, "recorded_on of an investigation")
        investigations = investigations[recorded.to_numpy()]
    return investigations, cases


def risk_tokens(
    investigations: pd.DataFrame,
    risk_regions: pd.DataFrame,
    cases: pd.DataFrame,
    as_of: dt.date,
    window_days: int,
) -> pd.DataFrame:
    """The risk set, one row per distinct (token, case_id), with columns `COLUMNS`.

    `investigations` has (case_id, token[, recorded_on]), `cases` (case_id, subject_id[, report_date], ...),
    `risk_regions` (region_code, level, from_date, to_date); records not known by `as_of` are left out
    (`known_by`). Region tokens carry no case (case_id and case_subject_id None). Rows are sorted by
    (partition_id, token, case_id), region tokens last within a token. Raises RiskSetError on an
    investigation naming a case not in `cases` or holding a malformed token.
    """
    first, last = window(as_of, window_days)
    all_cases = set(cases["case_id"].astype(str))
    investigations, cases = known_by(investigations, cases, as_of)
    case_subject = dict(zip(cases["case_id"].astype(str), cases["subject_id"].astype(str), strict=True))
    rows: list[tuple[str, str | None, str | None, str, str, str]] = []

    inv = investigations[["case_id", "token"]].drop_duplicates()
    parsed: dict[str, tk.Token] = {}
    for token in pd.unique(inv["token"]):
        try:
            parsed[token] = tk.parse(str(token))
        except tk.TokenError as exc:
            raise RiskSetError(f"investigation token is malformed: {exc}") from exc
    for case_id, token in zip(inv["case_id"].astype(str), inv["token"], strict=True):
        if case_id not in case_subject:
            if case_id in all_cases:
                continue  # a case reported after as_of: not yet known
            raise RiskSetError(f"investigation names unknown case {case_id!r}")
        t = parsed[token]
        if t.day is None or first <= t.day <= last:
            rows.append((str(token), case_id, case_subject[case_id], t.partition_id, t.agency, t.kind))

    codes = risk_regions["region_code"].astype(str)
    spans = zip(codes, risk_regions["from_date"], risk_regions["to_date"], strict=True)
    for code, from_date, to_date in spans:
        start = max(first, _as_date(from_date, f"from_date of risk region {code}"))
        end = min(last, _as_date(to_date, f"to_date of risk region {code}"))
        day = start
        while day <= end:
            token = tk.region_day(code, day)
            rows.append((token, None, None, tk.partition_id("region-day", day), "carrier", "region-day"))
            day += dt.timedelta(days=1)

    out = pd.DataFrame(rows, columns=list(COLUMNS), dtype=object).drop_duplicates(["token", "case_id"])
    out = out.sort_values(["partition_id", "token", "case_id"], na_position="last", kind="stable")
    return out.reset_index(drop=True)
