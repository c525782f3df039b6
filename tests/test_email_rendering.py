"""The built-in follow-up e-mail: the facts in its subject, text and HTML, hostile values
escaped, and the HTML as headless Chromium draws it on a phone and a desktop.

The completed case's screenshots are copied to docs/ for the README, so each run
redraws them. Chromium and its driver are Debian's (`.ci/run` installs them); without
them the browser tests skip, unless REQUIRE_SERVICES=1, which fails them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.conftest import unavailable
from worker.delivery.templates import (
    DEFAULT_HTML,
    DEFAULT_SUBJECT,
    DEFAULT_TEXT,
    render,
    template_context,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DOCS = Path(__file__).resolve().parent.parent / "docs"
PHONE = (420, 900)
DESKTOP = (800, 1000)

REPORT_URL = "https://reports.northtoyota.example/inspections/NTO-7F3K2Q9D?lang=en&view=full"

COMPLETED: dict[str, Any] = {
    "type": "session.completed",
    "timestamp": "2026-11-30T15:42:10Z",
    "data": {
        "session_key": "NTO-7F3K2Q9D",
        "account": "north",
        "dealer_name": "North Toyota",
        "status": "COMPLETE",
        "previous_status": "IN_PROGRESS",
        "tracking": "finished",
        "inspect_started_at": "2026-11-30T15:18:02Z",
        "inspect_ended_at": "2026-11-30T15:39:47.250Z",
        "vehicle": {
            "vin": "5N1AT2MV0HC745812", "year": 2017, "make": "Nissan", "model": "Rogue",
            "trim": "AWD 4dr S", "ext_col": "Glacier White", "int_col": "Charcoal",
            "odom_reading": "100,945", "odom_unit": "KILOMETRES",
        },
        "options": {"sms": {"to_name": "Jane Smith", "by": "Steve's Test Dealer"}},
        "metadata": {"email": "jane@example.com", "report_url": REPORT_URL},
        "history": [{"status": "IN_PROGRESS"}, {"status": "COMPLETE"}],
    },
}

EXPIRED: dict[str, Any] = {
    "type": "session.expired",
    "timestamp": "2026-11-30T18:00:00Z",
    "data": {
        "session_key": "SOU-2B8M4X1C", "account": "default", "dealer_name": None,
        "status": "EXPIRED", "previous_status": "IDLE", "tracking": "finished",
        "inspect_started_at": None, "inspect_ended_at": None, "vehicle": None,
        "options": None, "metadata": None, "history": [],
    },
}

HOSTILE_DEALER = "O'Brien & Sons <Ltd> <script>document.title='owned'</script>"
HOSTILE_URL = 'https://x.example/r?q="><script>alert(1)</script>&next=' + "x" * 120
HOSTILE: dict[str, Any] = {
    "type": "session.completed",
    "timestamp": "2026-11-30T15:42:10Z",
    "data": {
        "session_key": "XSS-<b>1</b>",
        "dealer_name": HOSTILE_DEALER,
        "status": "COMPLETE",
        "inspect_started_at": "not a time <i>",
        "inspect_ended_at": "2026-11-30T15:39:47+01:00",
        "vehicle": {"year": 2019, "make": "Citroën", "model": "C5 <img src=x onerror=alert(1)>",
                    "vin": "VF7ÇSSß🚗", "ext_col": "Rouge Élixir", "odom_reading": 0,
                    "odom_unit": None},
        "options": {"sms": "not a mapping"},
        "metadata": {"report_url": HOSTILE_URL, "note": "<script>alert('m')</script>"},
    },
}


def rendered(document: dict[str, Any]) -> tuple[str, str, str]:
    context = template_context(document)
    return (render(DEFAULT_SUBJECT, context), render(DEFAULT_TEXT, context),
            render(DEFAULT_HTML, context, html=True))


def test_the_completed_message_carries_every_fact() -> None:
    subject, text, html = rendered(COMPLETED)
    assert subject == "Inspection complete: 2017 Nissan Rogue"
    for body in (text, html):
        for fact in ("North Toyota", "Inspection complete", "2017 Nissan Rogue", "AWD 4dr S",
                     "5N1AT2MV0HC745812", "100,945 km", "Glacier White exterior",
                     "Charcoal interior", "NTO-7F3K2Q9D", "COMPLETE",
                     "30 Nov 2026, 15:18 UTC", "30 Nov 2026, 15:39 UTC",
                     "View the inspection report"):
            assert fact in body, fact
    assert "Dealer:     North Toyota\n" in text
    assert text.endswith(f"View the inspection report:\n{REPORT_URL}\n")
    assert html.count(f'href="{REPORT_URL.replace("&", "&amp;")}"') == 2
    assert "<h2>Inspection complete</h2>" in html


def test_an_expired_session_without_vehicle_dealer_or_link() -> None:
    subject, text, html = rendered(EXPIRED)
    assert subject == "Inspection expired: SOU-2B8M4X1C"
    assert text == ("Inspection expired.\n\n"
                    "Vehicle:    not captured yet\n"
                    "Session:    SOU-2B8M4X1C\n"
                    "Status:     EXPIRED\n"
                    "Started:    -\n"
                    "Finished:   -\n")
    assert "Inspection expired" in html and "Not captured yet" in html
    assert ">Vehicle inspection</div>" in html  # the header, with no dealer to name
    assert "href=" not in html and "None" not in html and "Undefined" not in html


def test_the_dealer_falls_back_to_the_name_pave_sent_the_link_by() -> None:
    document = {**COMPLETED, "data": {**COMPLETED["data"], "dealer_name": None}}
    _, text, html = rendered(document)
    assert "Dealer:     Steve's Test Dealer\n" in text
    assert ">Steve&#39;s Test Dealer</div>" in html


@pytest.mark.parametrize("report_url", [
    "javascript:alert(1)", "//evil.example/x", "reports/1", "http://[oops", "", 42,
    ["https://a.example"],
])
def test_only_an_http_link_becomes_a_button(report_url: object) -> None:
    document = {**COMPLETED, "data": {**COMPLETED["data"], "metadata": {"report_url": report_url}}}
    _, text, html = rendered(document)
    assert "href=" not in html and "View the inspection report" not in html
    assert "View the inspection report" not in text and "javascript" not in text


def test_a_capture_link_is_offered_when_there_is_no_report() -> None:
    document = {**EXPIRED, "data": {**EXPIRED["data"],
                                    "capture_url": "https://capture.example/SOU-2B8M4X1C"}}
    _, text, html = rendered(document)
    assert text.endswith("Open the inspection:\nhttps://capture.example/SOU-2B8M4X1C\n")
    assert 'href="https://capture.example/SOU-2B8M4X1C"' in html


def test_hostile_values_are_escaped_and_non_ascii_kept() -> None:
    subject, text, html = rendered(HOSTILE)
    assert subject == "Inspection complete: 2019 Citroën C5 <img src=x onerror=alert(1)>"
    for tag in ("<script", "<img", "<b>", "<i>", "<Ltd>"):
        assert tag not in html, tag
    assert "O&#39;Brien &amp; Sons &lt;Ltd&gt; &lt;script&gt;" in html
    assert "XSS-&lt;b&gt;1&lt;/b&gt;" in html and "not a time &lt;i&gt;" in html
    assert 'q=&#34;&gt;&lt;script&gt;' in html  # the quote cannot end the href
    assert "alert('m')" not in html  # metadata other than the link is not shown
    for fact in ("Citroën", "VF7ÇSSß🚗", "Rouge Élixir exterior", "0\n", "30 Nov 2026, 14:39 UTC"):
        assert fact.strip() in text, fact
    assert f"Dealer:     {HOSTILE_DEALER}\n" in text  # plain text is shown as it came
    assert "Citroën" in html and "VF7ÇSSß🚗" in html


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        unavailable(f"headless Chromium needs {' and '.join(missing)} (apt-get install "
                    "chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--hide-scrollbars",
                     f"--window-size={PHONE[0]},{PHONE[1]}"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                                  options=options)
    except WebDriverException as exc:
        unavailable(f"headless Chromium did not start: {exc.msg}")
    try:
        yield driver
    finally:
        driver.quit()


def draw(driver: WebDriver, html: str, folder: Path, name: str, size: tuple[int, int]
         ) -> Path:
    """The message opened from a file in a window this wide, the window then made as
    tall as the message, and a screenshot of it."""
    page = folder / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    driver.set_window_size(*size)
    driver.get(page.as_uri())
    # The window's size includes what Chromium keeps for itself even headless.
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    extra = (size[0] - inner[0], size[1] - inner[1])
    height = driver.execute_script(
        "return Math.ceil(document.body.getBoundingClientRect().height)")
    driver.set_window_size(size[0] + extra[0], height + extra[1])
    picture = folder / f"{name}.png"
    assert driver.save_screenshot(str(picture))
    return picture


def viewport_fits(driver: WebDriver) -> bool:
    return bool(driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.mark.parametrize(("device", "size"), [("phone", PHONE), ("desktop", DESKTOP)])
def test_the_completed_message_in_chromium(browser: WebDriver, tmp_path: Path, device: str,
                                           size: tuple[int, int]) -> None:
    _, _, html = rendered(COMPLETED)
    picture = draw(browser, html, tmp_path, f"email-followup-{device}", size)

    dealer = browser.find_element(By.ID, "dealer")
    assert dealer.is_displayed() and dealer.text == "North Toyota"
    assert browser.find_element(By.TAG_NAME, "h2").text == "Inspection complete"
    button = browser.find_element(By.ID, "link")
    assert button.is_displayed() and button.text == "View the inspection report"
    assert button.get_attribute("href") == REPORT_URL
    assert viewport_fits(browser)
    card = browser.execute_script(
        "return document.getElementById('dealer').closest('table').getBoundingClientRect()"
        ".width")
    assert card <= 602  # 600 and its border, however wide the window
    body_text = browser.find_element(By.TAG_NAME, "body").text
    for fact in ("2017 Nissan Rogue", "5N1AT2MV0HC745812", "100,945 km", "NTO-7F3K2Q9D"):
        assert fact in body_text
    # The preheader is for the inbox's preview line, not the page.
    assert "Inspection complete: 2017 Nissan Rogue" not in body_text

    DOCS.mkdir(exist_ok=True)
    shutil.copyfile(picture, DOCS / picture.name)


def test_the_expired_message_in_chromium(browser: WebDriver, tmp_path: Path) -> None:
    _, _, html = rendered(EXPIRED)
    draw(browser, html, tmp_path, "expired-phone", PHONE)
    assert browser.find_element(By.ID, "dealer").text == "Vehicle inspection"
    assert browser.find_elements(By.TAG_NAME, "a") == []
    assert viewport_fits(browser)


def test_hostile_values_stay_text_in_chromium(browser: WebDriver, tmp_path: Path) -> None:
    _, _, html = rendered(HOSTILE)
    draw(browser, html, tmp_path, "hostile-phone", PHONE)
    assert browser.title == "Inspection complete"
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.find_element(By.ID, "dealer").text == HOSTILE_DEALER
    assert browser.find_element(By.ID, "link").get_attribute("href") == HOSTILE_URL.replace(
        '"', "%22").replace("<", "%3C").replace(">", "%3E")
    assert viewport_fits(browser)  # a long link wraps instead of widening the page
