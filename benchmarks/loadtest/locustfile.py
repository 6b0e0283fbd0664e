"""A morning peak on the code service, for locust (`healthpsi bench service` runs it headless).

Citizens fetch their code (JSON and page: most of the traffic), apply for a family member and check a
trip; verifiers at checkpoints fetch the trust and revocation lists; a commander watches the dashboard's
APIs. `BaselineUser` only asks /api/v1/health, the cheapest answer the service gives, so that the figures
of the peak can be read as ratios to it.

Environment (set by the benchmark):
  HEALTHPSI_BENCH_CITIZENS  a JSON file: {"sessions": [{"cookie", "phone", "codes"}], "family": [people]},
                            citizens the benchmark signed in before the run (their sessions are shared by
                            the users: one-time codes are rate-limited per address, and every user is on
                            127.0.0.1) and people without a code, for family applications
  HEALTHPSI_BENCH_PACE      requests per second per user (0 or unset: no wait between requests)
  HEALTHPSI_BENCH_OPERATOR, HEALTHPSI_BENCH_PASSWORD   the commander's login

A route the service does not have (FastAPI's bare 404) is counted as a success, so that the file can weigh
in parties not deployed yet; `healthpsi bench service` probes and reports which routes were absent.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, constant_throughput, events, tag, task
from locust.env import Environment

ABSENT = '{"detail":"Not Found"}'
"""FastAPI's body for a route that does not exist (a known route's 404 says more)."""

CITIZENS = Path(os.environ.get("HEALTHPSI_BENCH_CITIZENS", "/nonexistent"))
PACE = float(os.environ.get("HEALTHPSI_BENCH_PACE", "0") or 0)

_sessions: list[tuple[str, str, list[str]]] = []  # (session cookie, phone, the citizen's code ids)
_family: itertools.cycle[dict[str, str]] | None = None
_lock = threading.Lock()


def pacing() -> Any:
    """The wait between a user's requests: none, or a constant throughput per user."""
    return constant_throughput(PACE) if PACE > 0 else constant(0)


@events.test_start.add_listener
def _prepare(environment: Environment, **_: Any) -> None:
    """Load the signed-in citizens and the people for family applications the benchmark prepared."""
    global _family
    if not CITIZENS.is_file():
        return
    prepared = json.loads(CITIZENS.read_text(encoding="utf-8"))
    _sessions.extend((s["cookie"], s["phone"], s["codes"]) for s in prepared["sessions"])
    _family = itertools.cycle(prepared["family"]) if prepared["family"] else None


def tolerate_absent(response: Any) -> None:
    """A route the service does not have counts as a success (see the module's docstring)."""
    if response.status_code == 404 and response.text == ABSENT:
        response.success()


class CitizenUser(FastHttpUser):
    """A citizen on a phone: mostly shows the code; at times applies for a family member or checks a trip."""

    weight = 8
    wait_time = pacing()

    def on_start(self) -> None:
        self.cookie, self.phone, codes = random.choice(_sessions) if _sessions else ("", "", [])
        self.codes = codes or ["none"]

    def _get(self, path: str, name: str) -> None:
        headers = {"cookie": f"healthpsi_session={self.cookie}"} if self.cookie else {}
        with self.client.get(path, name=name, headers=headers, catch_response=True) as response:
            tolerate_absent(response)

    @tag("code")
    @task(10)
    def code_json(self) -> None:
        self._get(f"/api/v1/citizen/codes/{random.choice(self.codes)}", "/api/v1/citizen/codes/[id]")

    @task(4)
    def code_page(self) -> None:
        self._get(f"/citizen/codes/{random.choice(self.codes)}", "/citizen/codes/[id]")

    @task(1)
    def my_codes(self) -> None:
        self._get("/api/v1/citizen/codes", "/api/v1/citizen/codes")

    @tag("apply")
    @task(1)
    def apply_for_family(self) -> None:
        if _family is None:
            return
        with _lock:
            person = next(_family)
        headers = {"cookie": f"healthpsi_session={self.cookie}"} if self.cookie else {}
        body = {"relation": "family", "phone": self.phone or "13800138000", **person}
        with self.client.post(
            "/api/v1/citizen/applications",
            json=body,
            headers=headers,
            catch_response=True,
            name="/api/v1/citizen/applications",
        ) as response:
            if response.status_code == 422 and "refused" in response.text:
                response.success()  # a refusal is an answer (e.g. not in the register)
            tolerate_absent(response)

    @task(1)
    def trip_manifest(self) -> None:
        self._get("/api/v1/cotravel/manifest", "/api/v1/cotravel/manifest")


class VerifierUser(FastHttpUser):
    """A checkpoint's scanner refreshing its lists when online."""

    weight = 2
    wait_time = pacing()

    @task(1)
    def trust_list(self) -> None:
        with self.client.get("/api/v1/verifier/trustlist", catch_response=True) as response:
            tolerate_absent(response)

    @task(1)
    def revocations(self) -> None:
        with self.client.get("/api/v1/verifier/revocations", catch_response=True) as response:
            tolerate_absent(response)


class CommanderUser(FastHttpUser):
    """An operator's dashboard (its page refreshes itself every minute; here it asks faster)."""

    weight = 1
    fixed_count = 1
    wait_time = pacing()

    def on_start(self) -> None:
        page = self.client.get("/commander/login", name="/commander/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text or "")
        form = {
            "csrf": token.group(1) if token else "",
            "username": os.environ.get("HEALTHPSI_BENCH_OPERATOR", ""),
            "password": os.environ.get("HEALTHPSI_BENCH_PASSWORD", ""),
        }
        self.client.post(
            "/commander/login",
            data=urllib.parse.urlencode(form),
            headers={"content-type": "application/x-www-form-urlencoded"},
            name="/commander/login",
            allow_redirects=False,
        )

    @task(3)
    def summary(self) -> None:
        self.client.get("/api/v1/commander/summary", name="/api/v1/commander/summary")

    @task(1)
    def dashboard(self) -> None:
        self.client.get("/commander", name="/commander")


class BaselineUser(FastHttpUser):
    """The baseline: the service's cheapest answer, asked by the same number of users."""

    weight = 1
    wait_time = pacing()

    @task
    def health(self) -> None:
        self.client.get("/api/v1/health", name="/api/v1/health")
