"""The service's verifier configuration over a real uvicorn server: the pinned root fingerprint, the one
national trust list and every issuer's revocation list at the addresses it names, each checkable as a
checkpoint would."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from crypto.errors import TrustListError
from crypto.pki import parse_revocations, parse_trust_list
from runctx.pki import PkiPaths, init_keys
from service.app import create_app
from service.settings import ServiceSettings


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    """A run with two issuers, served on 127.0.0.1 by uvicorn in a thread."""
    scenario = {"as_of": "2020-02-10", "seed": 3, "deterministic": True}
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    init_keys(tmp_path, issuers=["411200", "410100"])
    app = create_app(ServiceSettings(run=tmp_path, apps=("verifier",)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_verifier_config_pins_the_root_and_lists_every_issuer(base_url: str, tmp_path: Path) -> None:
    config = httpx.get(f"{base_url}/api/v1/verifier/config", timeout=10).json()
    paths = PkiPaths(tmp_path)
    assert config["root_fingerprint"] == paths.root_fingerprint.read_text().strip()
    trustlist = httpx.get(base_url + config["trustlist_url"], timeout=10).json()
    trust = parse_trust_list(trustlist, fingerprint=config["root_fingerprint"])
    assert trust.issuers == {"411200", "410100"}
    lists = [parse_revocations(httpx.get(base_url + url, timeout=10).json(), trust)
             for url in config["revocations_urls"]]
    assert sorted(r.issuer for r in lists) == ["410100", "411200"]
    with pytest.raises(TrustListError, match="not the pinned"):
        parse_trust_list(trustlist, fingerprint="0" * 64)
    unknown = httpx.get(f"{base_url}/api/v1/verifier/revocations/999999", timeout=10)
    assert unknown.status_code == 503 and "999999" in unknown.json()["detail"]
