"""Headless Chromium: where it is, how it starts, where screens are saved."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).parent.parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def html_of(received) -> str:
    return received.message.get_body(("html",)).get_content()
