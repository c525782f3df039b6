"""The built-in customer reminder (`session.reminder`): the facts in its subject, text and
HTML, hostile values escaped, `build_message` choosing it, and the HTML as headless
Chromium draws it on a phone and a desktop (copied to docs/ on each run).

The browser, and its skip-or-fail rule, are those of `tests.test_email_rendering`.
"""

from __future__ import annotations

import copy
import shutil
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.test_email_rendering import (  # noqa: F401 (`browser` is a fixture)
    DESKTOP,
    DOCS,
    PHONE,
    browser,
    draw,
    viewport_fits,
)
from worker.delivery.email import build_message
from worker.delivery.events import serialise
from worker.delivery.targets import EmailTarget
from worker.delivery.templates import (
    DEFAULT_HTML,
    DEFAULT_SUBJECT,
    DEFAULT_TEXT,
    REMINDER_HTML,
    REMINDER_SUBJECT,
    REMINDER_TEXT,
    built_in_templates,
    render,
    template_context,
)

CAPTURE_URL = "https://dev.paveinspect.com/valet/NTO-7F3K2Q9D/?l=en&utm_source=reminder"

REMINDER: dict[str, Any] = {
    "type": "session.reminder",
    "timestamp": "2026-12-01T14:00:00Z",
    "data": {
        "session_key": "NTO-7F3K2Q9D",
        "account": "north",
        "dealer_name": "North Toyota",
        "status": "IDLE",
        "previous_status": None,
        "tracking": "active",
        "inspect_started_at": None,
        "inspect_ended_at": None,
        "vehicle": {"vin": "5N1AT2MV0HC745812", "year": 2017, "make": "Nissan",
                    "model": "Rogue", "trim": "AWD 4dr S"},
        "options": {"client_id": "NORTH234889",
                    "sms": {"to": "647-455-XXXX", "to_name": "Jane Smith",
                            "from": "647-422-XXXX", "by": "Steve's Test Dealer"}},
        "metadata": {"email": "jane@example.com"},
        "capture_url": CAPTURE_URL,
        "history": [{"from": None, "to": "IDLE", "observed_at": "2026-12-01T10:00:00Z"}],
        "reminder": 1,
    },
}


def reminder(**data: Any) -> dict[str, Any]:
    document = copy.deepcopy(REMINDER)
    document["data"].update(data)
    return document


BARE = reminder(dealer_name=None, vehicle=None, options=None, metadata=None, capture_url=None,
                reminder=2)

HOSTILE_DEALER = "O'Brien & Sons <Ltd>"
HOSTILE_CUSTOMER = "<script>alert('x')</script> Zoë Ñúñez 山田"
HOSTILE = reminder(
    session_key="XSS-<b>1</b>",
    dealer_name=HOSTILE_DEALER,
    vehicle={"year": 2019, "make": "Citroën", "model": "C5 <img src=x onerror=alert(1)>"},
    metadata={"email": "zoe@example.com", "customer_name": HOSTILE_CUSTOMER},
    capture_url='https://x.example/c?q="><script>alert(1)</script>&n=' + "x" * 120,
)


def rendered(document: dict[str, Any]) -> tuple[str, str, str]:
    context = template_context(document)
    return (render(REMINDER_SUBJECT, context), render(REMINDER_TEXT, context),
            render(REMINDER_HTML, context, html=True))


def test_the_first_reminder_carries_the_facts_and_the_link() -> None:
    subject, text, html = rendered(REMINDER)
    assert subject == "Finish your vehicle inspection for North Toyota"
    assert text == (
        "Hi Jane Smith,\n\n"
        "North Toyota asked you for a short photo inspection of your 2017 Nissan Rogue. "
        "It only takes a few minutes with your phone's camera.\n\n"
        f"Finish your inspection:\n{CAPTURE_URL}\n\n"
        "Vehicle: 2017 Nissan Rogue (AWD 4dr S)\n\n"
        "Thank you,\nNorth Toyota\n\n"
        "Reference NTO-7F3K2Q9D\n")
    assert "<title>Finish your vehicle inspection</title>" in html
    for fact in ("Hi Jane Smith,", "North Toyota asked you", "2017 Nissan Rogue", "AWD 4dr S",
                 ">Finish your inspection</a>", "<br>Reference\n NTO-7F3K2Q9D</div>"):
        assert fact in html, fact
    assert html.count(f'href="{CAPTURE_URL.replace("&", "&amp;")}"') == 2


def test_no_internal_jargon_for_the_customer() -> None:
    for body in rendered(REMINDER):
        for word in ("IDLE", "status", "session", "Session", "north", "pave-tracker",
                     "647-455", "NORTH234889", "5N1AT2MV0HC745812"):
            assert word not in body, word
    # Outside the capture link, the session key appears once: the footer's reference.
    _, text, html = rendered(REMINDER)
    assert text.replace(CAPTURE_URL, "").count("NTO-7F3K2Q9D") == 1
    assert html.replace(CAPTURE_URL.replace("&", "&amp;"), "").count("NTO-7F3K2Q9D") == 1


def test_a_later_reminder_says_it_is_still_waiting() -> None:
    subject, text, html = rendered(reminder(reminder=2))
    assert subject == "Still waiting: your vehicle inspection for North Toyota"
    assert "North Toyota is still waiting for the photo inspection of your 2017 Nissan Rogue." \
        in text
    assert "<title>Your vehicle inspection is still waiting</title>" in html
    assert "is still waiting for the photo inspection" in html
    assert rendered(reminder(reminder=3))[0] == subject


def test_names_fall_back_to_the_ones_pave_sent_the_link_with() -> None:
    subject, text, html = rendered(reminder(dealer_name=None, metadata={"email": "j@x.example"}))
    assert subject == "Finish your vehicle inspection for Steve's Test Dealer"
    assert text.startswith("Hi Jane Smith,\n\nSteve's Test Dealer asked you")
    assert ">Steve&#39;s Test Dealer</div>" in html


def test_the_dealers_customer_name_wins_over_paves() -> None:
    _, text, _ = rendered(reminder(metadata={"customer_name": "  Jane Q. Smith "}))
    assert text.startswith("Hi Jane Q. Smith,\n")
    _, text, _ = rendered(reminder(metadata={"customer_name": "   "}))
    assert text.startswith("Hi Jane Smith,\n")


def test_without_vehicle_names_dealer_or_link_it_still_reads_well() -> None:
    subject, text, html = rendered(BARE)
    assert subject == "Still waiting: your vehicle inspection"
    assert text == (
        "Hello,\n\n"
        "We are still waiting for the photo inspection of your vehicle. "
        "It only takes a few minutes with your phone's camera.\n\n"
        "Please open the inspection link the dealer sent you earlier, or ask them for a "
        "new one.\n\n"
        "Thank you.\n\n"
        "Reference NTO-7F3K2Q9D\n")
    assert "<a " not in html and "href=" not in html and 'id="vehicle"' not in html
    assert ">Vehicle inspection</div>" in html and "Hello," in html
    for leftover in ("None", "Undefined", "your None", "  ,"):
        assert leftover not in text + html, leftover


@pytest.mark.parametrize("vehicle", [
    {"make": "Nissan"}, {"make": "Nissan", "model": None, "year": ""},
])
def test_a_partial_vehicle_says_what_is_known(vehicle: dict[str, Any]) -> None:
    _, text, html = rendered(reminder(vehicle=vehicle))
    assert "photo inspection of your Nissan." in text and "Vehicle: Nissan\n" in text
    assert "None" not in text + html


def test_a_vehicle_known_only_by_its_vin() -> None:
    _, text, html = rendered(reminder(vehicle={"vin": "5N1AT2MV0HC745812", "year": None}))
    assert "photo inspection of your vehicle (VIN 5N1AT2MV0HC745812)." in text
    assert "Vehicle: VIN 5N1AT2MV0HC745812\n" in text
    assert ">VIN 5N1AT2MV0HC745812</div>" in html


@pytest.mark.parametrize("capture_url", [
    "javascript:alert(1)", "//evil.example/x", "valet/1", "http://[oops", "", 42, None,
])
def test_only_an_http_capture_link_becomes_a_button(capture_url: object) -> None:
    _, text, html = rendered(reminder(capture_url=capture_url))
    assert "href=" not in html and "Finish your inspection</a>" not in html
    assert "Please open the inspection link North Toyota sent you earlier" in text
    assert "javascript" not in text + html and "evil" not in text + html


def test_hostile_values_are_escaped_and_non_ascii_kept() -> None:
    subject, text, html = rendered(HOSTILE)
    assert subject == "Finish your vehicle inspection for O'Brien & Sons <Ltd>"
    for tag in ("<script", "<img", "<b>", "<Ltd>"):
        assert tag not in html, tag
    assert "O&#39;Brien &amp; Sons &lt;Ltd&gt;" in html
    assert "Hi &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Zoë Ñúñez 山田," in html
    assert "Citroën C5 &lt;img src=x onerror=alert(1)&gt;" in html
    assert "XSS-&lt;b&gt;1&lt;/b&gt;" in html
    assert 'q=&#34;&gt;&lt;script&gt;' in html  # the quote cannot end the href
    assert f"Hi {HOSTILE_CUSTOMER},\n" in text  # plain text is shown as it came
    assert "Thank you,\nO'Brien & Sons <Ltd>\n" in text


def test_the_built_in_templates_follow_the_event() -> None:
    assert built_in_templates("session.reminder") == (REMINDER_SUBJECT, REMINDER_TEXT,
                                                      REMINDER_HTML)
    for event_type in ("session.completed", "session.stalled", "nonsense", None):
        assert built_in_templates(event_type) == (DEFAULT_SUBJECT, DEFAULT_TEXT, DEFAULT_HTML)


def email_target(**extra: Any) -> EmailTarget:
    return EmailTarget.model_validate({
        "name": "email", "smtp_url": "smtp://127.0.0.1:25", "sender": "desk@dealer.example",
        "default_to": "desk@dealer.example",
        "events": ["session.completed", "session.reminder"], **extra})


def parts(message: EmailMessage) -> tuple[str, str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    return str(message["Subject"]), text.get_content(), html.get_content()


def test_build_message_picks_the_reminder_for_a_reminder() -> None:
    message = build_message(email_target(), delivery_id="d-1", body=serialise(HOSTILE))
    message.as_bytes()
    assert message["To"] == "zoe@example.com"  # the session's email, not the target's
    subject, text, html = parts(message)
    assert subject == "Finish your vehicle inspection for O'Brien & Sons <Ltd>"
    assert text.startswith(f"Hi {HOSTILE_CUSTOMER},\n")
    assert ">Finish your inspection</a>" in html and "<script" not in html


def test_build_message_keeps_the_follow_up_for_other_events() -> None:
    completed = reminder(status="COMPLETE")
    completed["type"] = "session.completed"
    del completed["data"]["reminder"]
    subject, text, html = parts(build_message(email_target(), delivery_id="d-2",
                                              body=serialise(completed)))
    assert subject == "Inspection complete: 2017 Nissan Rogue"
    assert "Session:    NTO-7F3K2Q9D" in text and "<h2>Inspection complete</h2>" in html


def test_a_targets_own_templates_win_part_by_part() -> None:
    own = email_target(subject_template="Inspection {{ session_key }} (#{{ reminder }})",
                       html_template="<p>{{ dealer_name }}</p>")
    subject, text, html = parts(build_message(own, delivery_id="d-3", body=serialise(HOSTILE)))
    assert subject == "Inspection XSS-<b>1</b> (#1)"
    assert html == "<p>O&#39;Brien &amp; Sons &lt;Ltd&gt;</p>\n"
    assert text.startswith(f"Hi {HOSTILE_CUSTOMER},\n")  # not set: the built-in reminder


def test_a_reminder_without_an_address_goes_to_the_targets() -> None:
    message = build_message(email_target(), delivery_id="d-4", body=serialise(BARE))
    assert message["To"] == "desk@dealer.example"
    assert parts(message)[0] == "Still waiting: your vehicle inspection"


@pytest.mark.parametrize(("device", "size"), [("phone", PHONE), ("desktop", DESKTOP)])
def test_the_reminder_in_chromium(browser: WebDriver, tmp_path: Path,  # noqa: F811
                                  device: str, size: tuple[int, int]) -> None:
    _, _, html = rendered(REMINDER)
    picture = draw(browser, html, tmp_path, f"email-reminder-{device}", size)

    assert browser.title == "Finish your vehicle inspection"
    assert browser.find_element(By.ID, "dealer").text == "North Toyota"
    button = browser.find_element(By.ID, "link")
    assert button.is_displayed() and button.text == "Finish your inspection"
    assert button.get_attribute("href") == CAPTURE_URL
    box = button.rect
    assert box["width"] > 150 and box["height"] >= 40  # a button a thumb can find
    assert box["x"] >= 0 and box["x"] + box["width"] <= size[0]
    assert viewport_fits(browser)
    assert browser.execute_script(
        "return [...document.querySelectorAll('body *')].every("
        "e => e.getBoundingClientRect().right <= window.innerWidth)")
    body_text = browser.find_element(By.TAG_NAME, "body").text
    for fact in ("Hi Jane Smith,", "2017 Nissan Rogue", "AWD 4dr S", "Thank you,"):
        assert fact in body_text, fact
    assert "IDLE" not in body_text

    DOCS.mkdir(exist_ok=True)
    shutil.copyfile(picture, DOCS / picture.name)


def test_a_bare_reminder_in_chromium(browser: WebDriver, tmp_path: Path  # noqa: F811
                                     ) -> None:
    _, _, html = rendered(BARE)
    draw(browser, html, tmp_path, "reminder-bare-phone", PHONE)
    assert browser.find_element(By.ID, "dealer").text == "Vehicle inspection"
    assert browser.find_elements(By.TAG_NAME, "a") == []
    assert browser.find_element(By.ID, "no-link").is_displayed()
    assert viewport_fits(browser)


def test_hostile_values_stay_text_in_chromium(browser: WebDriver, tmp_path: Path  # noqa: F811
                                              ) -> None:
    _, _, html = rendered(HOSTILE)
    draw(browser, html, tmp_path, "reminder-hostile-phone", PHONE)
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.find_element(By.ID, "dealer").text == HOSTILE_DEALER
    assert f"Hi {HOSTILE_CUSTOMER}," in browser.find_element(By.ID, "message").text
    assert viewport_fits(browser)  # a long link wraps instead of widening the page
