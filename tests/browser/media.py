"""Test media for the verifier: a Y4M video of a QR image (Chromium's fake camera plays it in a loop) and
codes made from a run's codes (tampered, revoked)."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import cbor2
import numpy as np
from PIL import Image

from crypto.codes import (
    HCP_PREFIX,
    P256_ORDER,
    CoseSign1,
    b45decode,
    b45encode,
    decode_claims,
    decode_cose,
    decompress,
    unprefix,
)

VIDEO_SIZE = (640, 480)


def qr_y4m(png: bytes, path: Path, frames: int = 15) -> Path:
    """Write a 640×480 4:2:0 Y4M video whose every frame shows the QR image centred on white."""
    qr = Image.open(io.BytesIO(png)).convert("L")
    width, height = VIDEO_SIZE
    scale = max(1, min((width - 40) // qr.width, (height - 40) // qr.height))
    qr = qr.resize((qr.width * scale, qr.height * scale), Image.Resampling.NEAREST)
    canvas = Image.new("L", VIDEO_SIZE, 255)
    canvas.paste(qr, ((width - qr.width) // 2, (height - qr.height) // 2))
    luma = np.asarray(canvas, dtype=np.uint8).tobytes()
    chroma = bytes([128]) * ((width // 2) * (height // 2))
    frame = b"FRAME\n" + luma + chroma + chroma
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode() + frame * frames)
    return path


def recoloured(payload: str, colour: str) -> str:
    """The payload with its colour claim changed and the original signature kept (a tampered code)."""
    _, text = unprefix(payload)
    cose = decode_cose(decompress(b45decode(text)))
    claims = decode_claims(cose.payload)
    claims[-260][1]["c"] = colour
    forged = CoseSign1(
        cose.protected_bytes,
        cose.protected,
        cose.unprotected,
        cbor2.dumps(claims, canonical=True),
        cose.signature,
    )
    return HCP_PREFIX + b45encode(zlib.compress(forged.encode()))


def high_s_twin(payload: str) -> str:
    """The payload with its ES256 signature's s replaced by n - s: the same signature for ECDSA, but the
    malleable high-S form that healthpsi codes must not carry."""
    _, text = unprefix(payload)
    cose = decode_cose(decompress(b45decode(text)))
    r, s = cose.signature[:32], int.from_bytes(cose.signature[32:], "big")
    twin = CoseSign1(
        cose.protected_bytes,
        cose.protected,
        cose.unprotected,
        cose.payload,
        r + (P256_ORDER - s).to_bytes(32, "big"),
    )
    return HCP_PREFIX + b45encode(zlib.compress(twin.encode()))
