"""What a citizen may send: phone numbers, one-time codes, applications and appeals, each checked field by
field (the same models serve the JSON APIs and the HTML forms)."""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from proto import ids

PHONE_PATTERN = r"^1[3-9][0-9]{9}$"
"""A mainland mobile number: 11 digits starting 13–19."""
SUBJECT_ID_PATTERN = r"^[0-9]{17}[0-9X]$"
"""An 18-character resident ID as typed (its check character is checked by `proto.ids`)."""
SYMPTOMS = ("fever", "cough", "fatigue", "breath", "taste")
EARLIEST_BIRTH = dt.date(1900, 1, 1)


def upper_id(value: object) -> object:
    """An ID number as typed, stripped and with a lower-case check character `x` made `X`."""
    return value.strip().upper() if isinstance(value, str) else value


def printable_name(value: str) -> str:
    """The name, unless it holds control or separator characters (a plain space is allowed)."""
    if any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in value):
        raise ValueError("name holds control or separator characters")
    return value


SubjectId = Annotated[
    str, BeforeValidator(upper_id), Field(pattern=SUBJECT_ID_PATTERN, description="18-character resident ID")
]
"""A resident ID number as a form or a JSON body gives it (its check character is checked by the model)."""
PersonName = Annotated[str, Field(min_length=1, max_length=40), AfterValidator(printable_name)]
"""A person's name as registered."""


class Strict(BaseModel):
    """Unknown fields are refused, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OtpRequest(Strict):
    """Ask for a one-time code by SMS."""

    phone: str = Field(pattern=PHONE_PATTERN, description="11-digit mobile", examples=["13800138000"])


class SessionRequest(Strict):
    """Sign in with the phone and the one-time code it received."""

    phone: str = Field(pattern=PHONE_PATTERN, examples=["13812345678"])
    otp: str = Field(pattern=r"^[0-9]{6}$", description="the 6-digit code from the SMS", examples=["123456"])


class ApplicationRequest(Strict):
    """Apply for a code, for oneself or a family member."""

    relation: Literal["self", "family"]
    name: PersonName = Field(examples=["张德雅"])
    subject_id: SubjectId = Field(examples=["41120219290113076X"])
    birth_date: dt.date = Field(examples=["1929-01-13"])
    phone: str = Field(pattern=PHONE_PATTERN, description="the holder's mobile number")
    symptoms: list[Literal["fever", "cough", "fatigue", "breath", "taste"]] = Field(
        default_factory=list, max_length=len(SYMPTOMS)
    )

    @model_validator(mode="after")
    def _consistent(self) -> ApplicationRequest:
        if not ids.is_valid(self.subject_id):
            raise ValueError("subject_id: the check character does not match the ID number")
        if not EARLIEST_BIRTH <= self.birth_date <= dt.date.today():
            raise ValueError(f"birth_date: must lie between {EARLIEST_BIRTH} and today")
        if self.subject_id[6:14] != self.birth_date.strftime("%Y%m%d"):
            raise ValueError("birth_date: does not match the birth date inside the ID number")
        if len(set(self.symptoms)) != len(self.symptoms):
            raise ValueError("symptoms: each symptom at most once")
        return self


class AppealRequest(Strict):
    """Appeal against a code's colour, with a reason in the citizen's words."""

    reason: str = Field(min_length=5, max_length=500, examples=["I was not on that train; see my ticket."])


def first_problem(error: ValidationError) -> str:
    """One line naming the first invalid field and what is wrong with it."""
    problem = error.errors()[0]
    field = ".".join(str(p) for p in problem.get("loc", ()) if p != "__root__")
    message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{field}: {message}" if field and not message.startswith(field) else message
