"""The service's settings: the run it serves, which party apps are on, and its own state directory."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

APPS = ("citizen", "verifier", "venue", "commander", "host")
"""Every party app the service can serve; `healthpsi serve --app` picks among them."""

ENV_SETTINGS = "HEALTHPSI_SERVICE_SETTINGS"
"""Environment variable carrying the settings (JSON) to each uvicorn worker process."""


class SettingsError(ValueError):
    """Settings the service cannot start with; the message names the problem and what to do."""


@dataclass(frozen=True)
class ServiceSettings:
    """What one `healthpsi serve` serves: the run directory, the apps, and the limits it enforces."""

    run: Path
    apps: tuple[str, ...] = APPS
    nodes: dict[str, str] = field(default_factory=dict)
    """agency → host:port of the nodes the service queries (police: identity checks)."""
    session_max_age: int = 8 * 3600
    """Seconds a signed session cookie stays valid."""
    max_body_bytes: int = 64 * 1024
    """Largest request body accepted (413 beyond)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.apps) - set(APPS))
        if unknown:
            raise SettingsError(f"unknown app {', '.join(unknown)}; expected some of {', '.join(APPS)}")
        if not (self.run / "scenario.json").is_file():
            raise SettingsError(
                f"{self.run} is not a run directory (no scenario.json); "
                f"make one with: healthpsi run --preset city-20k --seed 7 --out {self.run}"
            )

    @property
    def state_dir(self) -> Path:
        """RUN/service/: the service's own files (sessions key, accounts, SMS outbox, counts)."""
        return self.run / "service"

    def secret_key(self) -> bytes:
        """The key that signs session cookies, made once per run (RUN/service/secret.key, mode 0600)."""
        path = self.state_dir / "secret.key"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
        return path.read_bytes()

    def to_env(self) -> str:
        """The settings as JSON, for the worker processes (see `from_env`)."""
        return json.dumps(
            {
                "run": str(self.run),
                "apps": list(self.apps),
                "nodes": self.nodes,
                "session_max_age": self.session_max_age,
                "max_body_bytes": self.max_body_bytes,
            }
        )

    @classmethod
    def from_env(cls) -> ServiceSettings:
        """The settings a `healthpsi serve` parent put in the environment of its workers."""
        raw = os.environ.get(ENV_SETTINGS)
        if not raw:
            raise SettingsError(f"{ENV_SETTINGS} is not set; start the service with `healthpsi serve`")
        doc = json.loads(raw)
        return cls(
            run=Path(doc["run"]),
            apps=tuple(doc["apps"]),
            nodes=dict(doc["nodes"]),
            session_max_age=int(doc["session_max_age"]),
            max_body_bytes=int(doc["max_body_bytes"]),
        )
