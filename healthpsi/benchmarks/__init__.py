"""Measurement code behind `healthpsi bench`: one module per benchmark, each returning a JSON-ready dict."""
