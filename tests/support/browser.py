"""Debian's Chromium under Playwright, as an operator's or supervisor's browser: fake microphone
(a WAV it loops), no network of its own, the appliance's self-signed certificate accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


async def launch(playwright: Any, microphone: Path) -> Any:
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}", "--autoplay-policy=no-user-gesture-required",
        # Without these Chromium keeps trying to reach Google's hosts from a box with no internet.
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-quic",
    ])


async def signed_in(browser: Any, url: str, username: str, password: str, ready: str) -> Any:
    """A page of the console, signed in as `username`, once `ready` (a selector) shows."""
    # The appliance's self-signed certificate, as a person accepts it after comparing fingerprints.
    context = await browser.new_context(ignore_https_errors=True, viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    await page.goto(url + "/")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login-button")
    await page.wait_for_selector(ready, timeout=15000)
    return page
