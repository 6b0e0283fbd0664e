"""Health codes as QR images: the PNG the issuer writes for a payload, and the payload read back from an image
(the verifier's input)."""

from __future__ import annotations

import io

import segno
import zxingcpp
from PIL import Image

from crypto.errors import CodeFormatError


def qr_png(payload: str, scale: int = 4) -> bytes:
    """A PNG of the payload's QR code (error correction Q, alphanumeric mode for base45 payloads)."""
    buffer = io.BytesIO()
    segno.make_qr(payload, error="q", boost_error=False).save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()


def read_qr_png(png: bytes) -> str:
    """The text of the QR code in a PNG (or other image); raises CodeFormatError if none can be read."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            qr_only = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
            results = zxingcpp.read_barcodes(image.convert("L"), formats=qr_only)
    except Exception as exc:  # PIL raises many types on a damaged image; all mean "unreadable"
        raise CodeFormatError(f"image: not a readable image ({type(exc).__name__}: {exc})") from None
    texts = [r.text for r in results if r.valid and r.text]
    if not texts:
        raise CodeFormatError("image: no readable QR code found")
    return texts[0]
