"""`healthpsi verify --file` reads at most what a health code or a QR image can be, and refuses files that
are not regular (exit 2 naming why)."""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from coordinator.qr import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from healthpsi.cli import app
from healthpsi.verify import MAX_TEXT_BYTES

runner = CliRunner()


def unusable(target: Path | str, tmp_path: Path) -> str:
    """Run `verify --file target --json` (the trust list is never reached); assert exit 2; return why."""
    result = runner.invoke(
        app, ["verify", "--file", str(target), "--trust", str(tmp_path / "trustlist.json"), "--json"]
    )
    assert result.exit_code == 2, result.output
    return str(json.loads(result.stdout)["reason"])


def test_a_300_mb_file_is_refused_without_being_read(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(300 * 1024 * 1024)  # sparse: no disk used
    tracemalloc.start()
    try:
        reason = unusable(big, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"more than {max(MAX_IMAGE_BYTES, MAX_TEXT_BYTES)} bytes" in reason
    assert peak < 64 * 1024 * 1024  # the limit read (and the command's own imports), not the 300 MB


def test_a_file_just_over_the_limit_is_refused(tmp_path: Path) -> None:
    over = tmp_path / "code.txt"
    over.write_bytes(b"HCP1:" + b"A" * max(MAX_IMAGE_BYTES, MAX_TEXT_BYTES))
    assert "larger than any health code or QR image" in unusable(over, tmp_path)


def test_devices_fifos_and_directories_are_refused(tmp_path: Path) -> None:
    assert "a device, FIFO or socket, not a regular file" in unusable("/dev/zero", tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "a device, FIFO or socket, not a regular file" in unusable(fifo, tmp_path)  # no writer: no wait
    assert "a directory, not a regular file" in unusable(tmp_path, tmp_path)


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    buffer = io.BytesIO()
    Image.new("1", (side, side), 1).save(buffer, format="PNG")  # compresses to a few kilobytes
    assert len(buffer.getvalue()) < MAX_IMAGE_BYTES
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(buffer.getvalue())
    assert f"{side}×{side} pixels, over the limit" in unusable(bomb, tmp_path)
