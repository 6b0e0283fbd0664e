"""The citizen desk: what the citizen pages and APIs do — applications checked over PSI and answered with
a code, a holder's view of a code, appeals — independent of HTTP."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import segno

from coordinator import applicants as appl
from coordinator.identity import POLICE, Checked, Declaration, IdentityChecker, IdentityCheckError
from coordinator.issuance import iso
from coordinator.service_log import (
    APPEAL_FILED,
    RECORDED,
    ServiceLog,
    appeal_digest,
    application_digest,
    code_line,
    line_digest,
    token_mac,
)
from coordinator.store import Appeal, Application, CodeFields, CodeRow, CodeStore
from coordinator.transport import GrpcTransport, NodeTransport
from crypto import codes
from runctx.pki import PkiPaths
from service.citizen.batching import MicroBatcher
from service.citizen.forms import ApplicationRequest
from service.citizen.issuing import Issuer, LatestEpoch, Unavailable, latest_epoch
from service.settings import ServiceSettings

log = logging.getLogger("healthpsi.citizen")

BATCH_WINDOW = 0.005
"""Seconds applications are collected before their identities are checked together."""
NODE_DEADLINE = 10.0
"""Seconds an identity check may wait for the police node (a node down is reported within seconds)."""


@dataclass(frozen=True)
class Outcome:
    """An application's outcome: the code it led to, or the refusal reason."""

    application_id: str
    code: CodeRow | None
    refusal: str | None


@dataclass(frozen=True)
class CodeView:
    """A code as its holder sees it: the stored row, the masked name and id it carries, its state."""

    row: CodeRow
    name: str
    subject_id: str
    green_from: dt.date | None
    expired: bool
    revoked: str | None

    @property
    def qr_svg(self) -> str:
        """The code's QR as inline SVG (made once per payload: an issued code never changes)."""
        return qr_svg(self.row.payload)

    def to_json(self) -> dict[str, Any]:
        """The view as JSON (no payload bytes beyond the payload text itself)."""
        return {
            "code_id": self.row.code_id,
            "color": self.row.color,
            "reasons": list(self.row.reasons),
            "issued_at": self.row.issued_at,
            "expires_at": self.row.expires_at,
            "name": self.name,
            "subject_id": self.subject_id,
            "green_from": None if self.green_from is None else self.green_from.isoformat(),
            "expired": self.expired,
            "revoked": self.revoked,
            "payload": self.row.payload,
        }


@functools.lru_cache(maxsize=4096)
def qr_svg(payload: str) -> str:
    """The payload's QR code as an inline SVG (error correction Q, black on white, quiet zone 4)."""
    qr = segno.make_qr(payload, error="q", boost_error=False)
    return str(qr.svg_inline(scale=4, border=4, omitsize=True, dark="#000", light="#fff"))


@functools.lru_cache(maxsize=65536)
def _shown_claims(payload: str) -> tuple[str, str, dt.date | None]:
    """The masked name, masked id and first green day a code's claims carry (decoded once per payload)."""
    decoded = codes.decode_payload(payload)
    entry = codes.health_certificate(codes.decode_claims(decoded.cose.payload), decoded.format)
    until = entry.get("vd")
    green_from = None if until is None else dt.date.fromisoformat(until) + dt.timedelta(days=1)
    return str(entry.get("n", "")), str(entry.get("sid", "")), green_from


class CitizenDesk:
    """One worker's citizen desk over a run: its code store, signing key and identity-check batcher."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.run = settings.run
        self.store_path = self.run / "coordinator" / "codes.sqlite"
        self._issuer: Issuer | None = None
        self._transports: dict[str, NodeTransport] | None = None
        self._checkers: dict[str, IdentityChecker] = {}
        self._audit_log: ServiceLog | None = None
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self.batcher: MicroBatcher[tuple[str, ApplicationRequest], Outcome] = MicroBatcher(
            self._apply_batch, BATCH_WINDOW, 64
        )
        self._readers = threading.local()

    def store(self) -> CodeStore:
        """A connection to the run's code store (one per request: requests run on many threads)."""
        return CodeStore(self.store_path)

    def reader(self) -> CodeStore:
        """This thread's long-lived connection for reads on the hot path (code fetches): opening the store
        and checking its schema on every fetch cost more than the fetch itself."""
        store: CodeStore | None = getattr(self._readers, "store", None)
        if store is None:
            store = self._readers.store = CodeStore(self.store_path)
        return store

    @property
    def issuer(self) -> Issuer:
        """The signer of new codes (loaded on first use)."""
        if self._issuer is None:
            self._issuer = Issuer(self.run)
        return self._issuer

    def _transports_now(self) -> dict[str, NodeTransport]:
        if self._transports is None:
            address = self.settings.nodes.get(POLICE)
            if address is None:
                raise Unavailable("identity checks need the police node: start with --node police=HOST:PORT")
            police = GrpcTransport(address, POLICE, PkiPaths(self.run), deadline=NODE_DEADLINE, retries=1)
            self._transports = {POLICE: police}
        return self._transports

    @property
    def audit_log(self) -> ServiceLog:
        """The service's audit log (opened on first use)."""
        if self._audit_log is None:
            self._audit_log = ServiceLog(self.run)
        return self._audit_log

    def _log(self, event: str, **fields: Any) -> None:
        """An identity check's entry (`evaluate`, `index_streamed`), kept until the batch's applications are
        logged with it (batches run one at a time)."""
        self._pending.append((event, fields))

    def _flush(self, *entries: tuple[str, dict[str, Any]]) -> None:
        """Write the pending check entries and `entries` to the service's audit log, together."""
        pending, self._pending = self._pending, []
        self.audit_log.append([*pending, *entries])

    def _check(self, epoch: LatestEpoch, declarations: list[Declaration]) -> Checked:
        """One batch of identity checks: one Evaluate call for its new tokens."""
        checker = self._checkers.get(epoch.epoch)
        if checker is None:
            checker = IdentityChecker(
                self.run,
                self._transports_now(),
                epoch=epoch.epoch,
                as_of=epoch.as_of,
                window_days=epoch.window_days,
                audit=self._log,
            )
            self._checkers = {epoch.epoch: checker}
        try:
            return checker.check(declarations)
        except IdentityCheckError as exc:
            log.warning("identity check failed: %s", exc)
            raise Unavailable(f"the police node cannot check identities now: {exc}") from exc

    async def apply(self, phone: str, request: ApplicationRequest) -> Outcome:
        """Check the declared identity over PSI, then store the application with its code or refusal (the
        applications of a few milliseconds share one check, one transaction and one audit entry)."""
        return await self.batcher.submit((phone, request))

    def _apply_batch(self, items: list[tuple[str, ApplicationRequest]]) -> list[Outcome]:
        """Check a batch's identities, sign codes for those the register holds, and store every application
        with its code or refusal, bound in the service's audit log before the transaction commits."""
        try:
            return self._check_and_record(items)
        finally:
            if self._pending:  # a check's queries are logged even when its applications are not stored
                self._flush()

    def _check_and_record(self, items: list[tuple[str, ApplicationRequest]]) -> list[Outcome]:
        epoch = latest_epoch(self.run)
        declarations = [Declaration(r.subject_id, r.name, r.birth_date) for _, r in items]
        checked = self._check(epoch, declarations)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        records: list[tuple[Application, CodeFields | None, tuple[str, str] | None]] = []
        for (phone, request), known in zip(items, checked.known, strict=True):
            code = (
                self.issuer.code(epoch, request.subject_id, request.name, now, bool(request.symptoms))
                if known
                else None
            )
            refusal = None if known else appl.REASON_NOT_IN_REGISTER
            application = Application(
                application_id=secrets.token_hex(8),
                applicant_phone=phone,
                relation=request.relation,
                subject_id=request.subject_id,
                phone=request.phone,
                symptoms=tuple(request.symptoms),
                created_at=iso(now),
                epoch=epoch.epoch,
                status="issued" if known else "refused",
                reason=refusal,
                code_id=None,
            )
            records.append((application, code, None if refusal is None else (request.subject_id, refusal)))

        def bind(stored: list[tuple[Application, CodeRow | None]]) -> None:
            entries = []
            signed = [code for _, code, _ in records]
            for (application, row), code, declaration in zip(stored, signed, declarations, strict=True):
                entries.append(
                    {
                        "application_id": application.application_id,
                        "digest": application_digest(application),
                        "token": token_mac(self.issuer.secret, declaration.token),
                        "code_id": None if row is None else row.code_id,
                        "code": None if row is None else line_digest(code_line(row)),
                        "new": code is not None and row is not None and row.payload == code[6],
                    }
                )
            self._flush((RECORDED, {"epoch": epoch.epoch, "check": checked.label, "applications": entries}))

        with self.store() as store:
            rows = store.record_applications(records, bind)
        return [
            Outcome(application.application_id, row, application.reason)
            for (application, _, _), row in zip(records, rows, strict=True)
        ]

    def close(self) -> None:
        """Sign a head over what this worker logged (at shutdown)."""
        if self._audit_log is not None:
            try:
                epoch = latest_epoch(self.run).epoch
            except Unavailable:
                epoch = ""
            self._audit_log.sign_head(epoch)

    def applications(self, phone: str) -> list[tuple[Application, CodeRow | None]]:
        """The phone's applications, newest first, each with its code (None for a refusal), read on this
        thread's long-lived connection (a soak made opening the store per listing its costliest request)."""
        store = self.reader()
        mine = store.applications_of(phone)
        return [(a, None if a.code_id is None else store.code(a.code_id)) for a in mine]

    def view(self, phone: str, code_id: str, now: dt.datetime | None = None) -> CodeView | None:
        """The holder's view of a code, or None when no application from this phone led to it."""
        now = now or dt.datetime.now(dt.UTC)
        store = self.reader()
        if not store.holds(phone, code_id):
            return None
        row = store.code(code_id)
        revocation = store.revoked(code_id)
        if row is None:
            return None
        name, masked_id, green_from = _shown_claims(row.payload)
        expires = dt.datetime.fromisoformat(row.expires_at.replace("Z", "+00:00"))
        return CodeView(
            row=row,
            name=name,
            subject_id=masked_id,
            green_from=green_from,
            expired=expires <= now,
            revoked=None if revocation is None else revocation.reason,
        )

    def appeal(self, phone: str, code_id: str, reason: str) -> Appeal | None:
        """Store an appeal against one of the phone's codes and bind it in the service's log (None when the
        code is not among them)."""
        with self.store() as store:
            if not store.holds(phone, code_id):
                return None
            row = store.code(code_id)
            if row is None:
                return None
            appeal = Appeal(
                appeal_id=secrets.token_hex(8),
                subject_id=row.subject_id,
                code_id=code_id,
                reason=reason,
                created_at=iso(dt.datetime.now(dt.UTC)),
                status="open",
            )
            store.insert_appeal(appeal)
            latest = store.latest_epoch()
        epoch = "" if latest is None else latest[0]
        filed = {"epoch": epoch, "appeal_id": appeal.appeal_id, "digest": appeal_digest(appeal)}
        self.audit_log.append([(APPEAL_FILED, filed)])
        return appeal

    def appeals(self, phone: str, code_id: str) -> list[Appeal] | None:
        """The appeals against one of the phone's codes (None when the code is not among them)."""
        store = self.reader()
        if not store.holds(phone, code_id):
            return None
        return store.appeals(code_id)


def desk_of(settings: ServiceSettings, state: Any) -> CitizenDesk:
    """The worker's desk, made on first use and kept on the application's state."""
    desk = getattr(state, "citizen_desk", None)
    if desk is None:
        desk = CitizenDesk(settings)
        state.citizen_desk = desk
    return desk
