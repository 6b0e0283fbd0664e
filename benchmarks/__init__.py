"""Measurement code behind `healthpsi bench`: one module per benchmark, each returning a JSON-ready dict."""

from collections.abc import Callable

Step = Callable[[str], None]
"""Progress callback: called with a description after each step of a benchmark."""
