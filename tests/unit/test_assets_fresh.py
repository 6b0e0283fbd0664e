"""The committed browser bundles (service/static/dist) are what `make assets` builds from web/: npm ci from
the lockfile into a temporary copy, the pinned esbuild, byte-for-byte the same files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs npm ci and esbuild

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
DIST = ROOT / "service" / "static" / "dist"
SOURCES = ("package.json", "package-lock.json", "build.mjs", "src")


def _run(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )


def test_committed_bundles_match_a_fresh_build(tmp_path: Path) -> None:
    assert shutil.which("npm") and shutil.which("node"), "Node.js and npm are needed to rebuild the bundles"
    web = tmp_path / "web"
    web.mkdir()
    for name in SOURCES:
        source = WEB / name
        if source.is_dir():
            shutil.copytree(source, web / name)
        else:
            shutil.copy2(source, web / name)
    _run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], web)
    out = tmp_path / "dist"
    _run(["node", "build.mjs", str(out)], web)
    built = sorted(p.name for p in out.iterdir())
    committed = sorted(p.name for p in DIST.iterdir())
    assert built == committed, f"bundles built {built}, committed {committed}"
    stale = [name for name in built if (out / name).read_bytes() != (DIST / name).read_bytes()]
    assert not stale, f"committed bundles differ from a fresh build: {stale}; run `make assets` and commit"
