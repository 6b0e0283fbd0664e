"""Health codes as QR images: the PNG the issuer writes for a payload, and the payload read back from an image
(the verifier's input)."""

from __future__ import annotations

import io

import segno
import zxingcpp
from PIL import Image

from crypto.errors import CodeFormatError

MAX_IMAGE_BYTES = 1 << 20
"""The largest QR image read: a version-40 code (the largest) at 20 pixels a module is far below it."""
MAX_IMAGE_PIXELS = 4096 * 4096
"""The most pixels an image may declare before it is decoded (a small PNG can declare a huge image)."""


def qr_png(payload: str, scale: int = 4) -> bytes:
    """A PNG of the payload's QR code (error correction Q, alphanumeric mode for base45 payloads)."""
    buffer = io.BytesIO()
    segno.make_qr(payload, error="q", boost_error=False).save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()


def read_qr_png(png: bytes) -> str:
    """The text of the QR code in a PNG (or other image); raises CodeFormatError if none can be read."""
    if len(png) > MAX_IMAGE_BYTES:
        raise CodeFormatError(f"image: {len(png)} bytes, over the limit of {MAX_IMAGE_BYTES}")
    try:
        with Image.open(io.BytesIO(png)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise CodeFormatError(
                    f"image: {width}×{height} pixels, over the limit of {MAX_IMAGE_PIXELS} for a QR code"
                )
            image.load()
            qr_only = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
            results = zxingcpp.read_barcodes(image.convert("L"), formats=qr_only)
    except CodeFormatError:
        raise
    except Exception as exc:  # PIL raises many types on a damaged image; all mean "unreadable"
        raise CodeFormatError(f"image: not a readable image ({type(exc).__name__}: {exc})") from None
    texts = [r.text for r in results if r.valid and r.text]
    if not texts:
        raise CodeFormatError("image: no readable QR code found")
    return texts[0]
