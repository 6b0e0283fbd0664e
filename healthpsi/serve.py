"""`healthpsi serve`: the code service (FastAPI on uvicorn) over a run."""

from __future__ import annotations

import contextlib
import copy
import os
import socket
from pathlib import Path
from typing import Any

import typer
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from healthpsi.checks import parse_address, parse_nodes
from service.middleware import access_log as access_logger
from service.settings import APPS, ENV_SETTINGS, ServiceSettings, SettingsError


def serve(
    run: Path = typer.Option(..., "--run", help="The run directory to serve."),
    listen: str = typer.Option("127.0.0.1:8000", "--listen", help="HOST:PORT; port 0 = any free port."),
    app: str = typer.Option(",".join(APPS), "--app", help=f"Comma-separated apps among {', '.join(APPS)}."),
    node: list[str] = typer.Option([], "--node", help="AGENCY=HOST:PORT of a node the service queries."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes behind one listener."),
    access_log: Path | None = typer.Option(
        None, "--access-log", help="Append one JSON line per request (method, path, status, ms, client) here."
    ),
) -> None:
    """Serve the citizen, verifier, venue, host and commander apps over a run.

    The bound port is written to RUN/service/port while serving; Ctrl-C stops gracefully.

    [bold]Example:[/bold]

    [cyan]healthpsi serve --run runs/demo --listen 127.0.0.1:8000[/cyan]

    [cyan]healthpsi serve --run runs/demo --workers 2 --access-log runs/demo/service/access.jsonl[/cyan]
    """
    host, port = parse_address(listen, "--listen", any_port=True)
    try:
        settings = ServiceSettings(
            run=run, apps=tuple(a.strip() for a in app.split(",") if a.strip()), nodes=parse_nodes(node)
        )
    except SettingsError as exc:
        typer.echo(f"serve: {exc}", err=True)
        raise typer.Exit(2) from None
    if access_log is not None and not access_log.parent.is_dir():
        typer.echo(f"serve: --access-log: no directory {access_log.parent}", err=True)
        raise typer.Exit(2)
    settings.secret_key()  # made once, before the workers race to make it
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        typer.echo(f"serve: cannot listen on {listen}: {exc.strerror}; pick another --listen", err=True)
        raise typer.Exit(2) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    port_file = settings.state_dir / "port"
    port_file.write_text(f"{bound}\n")
    os.environ[ENV_SETTINGS] = settings.to_env()
    apps = ", ".join(settings.apps)
    typer.echo(f"serving {run} on http://{host}:{bound} (apps: {apps}; workers: {workers})")
    config = uvicorn.Config(
        "service.app:create_app_from_env",
        factory=True,
        workers=workers,
        log_level="warning",
        log_config=log_config(access_log),
        timeout_graceful_shutdown=10,
        # a worker imports the whole command line before it answers: on a busy machine that takes longer
        # than uvicorn's 5 s, which made the supervisor restart workers over and over
        timeout_worker_healthcheck=60,
    )
    try:
        # The workers share the socket bound above (uvicorn's own `fd=` takes it for a Unix socket).
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        with contextlib.suppress(FileNotFoundError):
            port_file.unlink()
        sock.close()


def log_config(access_log: Path | None) -> dict[str, Any]:
    """uvicorn's logging configuration (each worker applies it), plus the service's JSON access lines in
    `access_log` when given (one short line per write, so the workers' appends do not interleave)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    if access_log is not None:
        config["formatters"]["line"] = {"format": "%(message)s"}
        config["handlers"]["access_file"] = {
            "class": "logging.FileHandler", "filename": str(access_log), "formatter": "line",
        }
        config["loggers"][access_logger.name] = {
            "handlers": ["access_file"], "level": "INFO", "propagate": False,
        }
    return config
