"""The studio in a real browser: Debian's chromium, headless, driven by selenium through chromedriver.

It loads the page, starts a generation, waits for the takes' audio players and saves a screenshot. It skips
where no browser, driver, selenium or gradio is installed (``.ci/run`` installs them). Set
``JUKEBOX_STUDIO_SCREENSHOT=docs/studio.png`` to keep the screenshot (the README's is made this way).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.studio_server import Server

pytestmark = pytest.mark.browser

pytest.importorskip("gradio", reason="the studio extra is not installed")
pytest.importorskip("gradio_client", reason="the studio extra is not installed")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium (the studio-test extra) is not installed"
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TAKES = 3


@pytest.fixture
def browser() -> Iterator:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM  # the installed browser: selenium downloads nothing
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1900", "--mute-audio"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def _until(driver, script: str, timeout: float) -> object:
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while not (value := driver.execute_script(f"return {script}")):
        assert time.monotonic() < deadline, f"timed out waiting for: {script}"
        time.sleep(0.25)
    return value


def test_the_page_generates_takes_and_shows_their_players(browser, tmp_path: Path) -> None:
    started = time.monotonic()
    server = Server(tmp_path / "runs")
    try:
        browser.get(server.url)
        _until(browser, "document.querySelector('#generate')", 60)
        # The page fills the genre and artist lists from the model when it loads.
        _until(browser, "[...document.querySelectorAll('input')].some(i => i.value === 'unknown')", 60)
        browser.find_element("css selector", "#generate").click()
        # The takes' players appear when the job has written their audio (the page polls the server).
        _until(browser, f"document.querySelectorAll('.take-audio audio').length >= {TAKES}", 240)
        sources = browser.execute_script(
            "return [...document.querySelectorAll('.take-audio a[download]')].map(a => a.href)"
        )
        assert len(sources) >= TAKES and all("/gradio_api/file=" in s for s in sources)
        # Each take's chromagram is drawn beside it, and the queue says the job is done.
        _until(browser, f"document.querySelectorAll('.take img').length >= {TAKES}", 60)
        _until(browser, "document.querySelector('#queue').innerText.includes('done')", 30)
        runs = [p for p in server.runs.iterdir() if (p / "run.json").is_file()]
        assert len(runs) == 1 and len(list((runs[0] / "level_2").glob("item_*.wav"))) == TAKES
        time.sleep(1.0)  # let the last images finish drawing
        shot = tmp_path / "studio.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if keep := os.environ.get("JUKEBOX_STUDIO_SCREENSHOT"):
            shutil.copyfile(shot, keep)
    finally:
        server.kill()
    print(f"browser test: {time.monotonic() - started:.0f} s")
