"""The store manager's daily digest (`account.digest`): its facts in the subject, text and
HTML, hostile values escaped, the built-in template chosen and sent to the target's own
address, delivered for real (aiosmtpd, and a webhook verified by `standardwebhooks`),
and the HTML as headless Chromium draws it on a phone and a desktop (copied to docs/).

The browser, and its skip-or-fail rule, are those of `tests.test_email_rendering`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.receivers import WebhookReceiver, smtp_server
from tests.test_digests import NORTH, SEVEN_THIRTY, STALL_AFTER, seed
from tests.test_email_rendering import (  # noqa: F401 (`browser` is a fixture)
    DESKTOP,
    DOCS,
    PHONE,
    browser,
    draw,
    viewport_fits,
)
from tests.test_reminder_email import HOSTILE_CUSTOMER, HOSTILE_DEALER
from worker.accounts import Accounts
from worker.db import utcnow
from worker.delivery.draining import drain_outbox
from worker.delivery.email import build_message
from worker.delivery.events import serialise
from worker.delivery.targets import EmailTarget, Target, WebhookTarget
from worker.delivery.templates import (
    DIGEST_HTML,
    DIGEST_SUBJECT,
    DIGEST_TEXT,
    built_in_templates,
    long_date,
    render,
    template_context,
)
from worker.pave.simulator import serving
from worker.tracking.digests import digests_due, latest_digest_day, record_digests

LINK = "https://dev.paveinspect.com/valet/NTO-8F2K1/?l=en"


def stalled(key: str, status: str, hours: float, customer: str | None = None,
            vehicle: dict[str, Any] | None = None, link: str | None = None) -> dict[str, Any]:
    return {"session_key": key, "status": status, "status_since": "2026-12-04T09:00:00Z",
            "stalled_for": round(hours * 3600), "customer_name": customer,
            "vehicle": vehicle, "capture_url": link}


DIGEST: dict[str, Any] = {
    "type": "account.digest",
    "timestamp": "2026-12-05T12:30:04Z",
    "data": {
        "account": "north", "dealer_name": "North Toyota", "timezone": "America/Toronto",
        "date": "2026-12-05",
        "period": {"from": "2026-12-04T12:30:00Z", "to": "2026-12-05T12:30:00Z"},
        "tracked": 41, "ended": 33,
        "outcomes": {"completed": 25, "expired": 4, "invalid": 1, "other": 0,
                     "not_found": 1, "gave_up": 0, "stopped": 2},
        "completion_rate": 0.7576, "median_time_to_complete": 5520, "in_progress": 57,
        "stalled_count": 27,
        "stalled": [
            stalled("NTO-8F2K1", "IDLE", 25.8, "Jane Smith",
                    {"year": 2017, "make": "Nissan", "model": "Rogue", "vin": "5N1AT2"}, LINK),
            stalled("NTO-77Q0P", "CONFIRM", 16.7, vehicle={"vin": "JTDKB20U"}),
            stalled("NTO-3XW9A", "STARTED", 2.5, "Ahmed Khan"),
        ],
    },
}


def digest(**data: Any) -> dict[str, Any]:
    document = copy.deepcopy(DIGEST)
    document["data"].update(data)
    return document


HOSTILE = digest(dealer_name=HOSTILE_DEALER, stalled=[
    stalled("XSS-1", "<b>IDLE</b>", 30, HOSTILE_CUSTOMER,
            {"make": "Citroën", "model": "C5 <img src=x onerror=alert(1)>"},
            'javascript:alert(1)//"><script>alert(2)</script>')], stalled_count=1)
QUIET = digest(tracked=0, ended=0, outcomes=dict.fromkeys(DIGEST["data"]["outcomes"], 0),
               completion_rate=None, median_time_to_complete=None, in_progress=0,
               stalled_count=0, stalled=[], dealer_name=None)


def rendered(document: dict[str, Any]) -> tuple[str, str, str]:
    context = template_context(document)
    return (render(DIGEST_SUBJECT, context), render(DIGEST_TEXT, context),
            render(DIGEST_HTML, context, html=True))


def test_the_digest_carries_the_days_figures_and_who_to_call() -> None:
    subject, text, html = rendered(DIGEST)
    assert " ".join(subject.split()) == \
        "North Toyota: 25 inspections completed, 27 stalled (Saturday 5 December)"
    assert text.startswith(
        "Daily inspection digest: North Toyota\n"
        "Saturday 5 December, the 24 hours from Fri 4 Dec, 07:30 to Sat 5 Dec, 07:30 "
        "(America/Toronto)\n\n"
        "Completed:          25\n"
        "Completion rate:    76% of 33 that ended\n"
        "Median to complete: 1h 32m\n"
        "Stalled now:        27\n")
    for fact in ("New inspections tracked: 41", "In progress now:         57",
                 "  Expired: 4", "  Never found at PAVE: 1", "  Stopped by hand: 2",
                 "- Jane Smith, 2017 Nissan Rogue\n  IDLE for 1d 1h (NTO-8F2K1)\n"
                 f"  Link: {LINK}",
                 "- NTO-77Q0P, VIN JTDKB20U\n  CONFIRM for 16h 42m (NTO-77Q0P)",
                 "... and 24 more: `pave-tracker stalled --account north`"):
        assert fact in text, fact
    assert "Gave up" not in text and "Ended otherwise" not in text  # nothing to say
    for fact in ("<title>Daily inspection digest</title>", ">Daily inspection digest</div>",
                 ">Your inspections, Saturday 5 December</h1>", ">76%</div>",
                 "Completion rate of 33 ended", ">1h 32m</div>", ">Jane Smith</div>",
                 ">2017 Nissan Rogue</div>", f'href="{LINK}"', "… and 24 more",
                 "each day at\n 07:30."):
        assert fact in html, fact


def test_a_quiet_day_says_so_without_figures_it_does_not_have() -> None:
    subject, text, html = rendered(QUIET)
    assert " ".join(subject.split()) == "north: 0 inspections completed, 0 stalled " \
        "(Saturday 5 December)"
    assert "Completion rate:    -\nMedian to complete: -\n" in text
    assert "Nothing is stalled." in text and "How the" not in text and "more" not in text
    assert "Nothing is stalled." in html and ">-</div>" in html


def test_hostile_values_are_escaped_and_only_web_links_kept() -> None:
    _, text, html = rendered(HOSTILE)
    for tag in ("<script", "<img", "<b>IDLE", "javascript:"):
        assert tag not in html, tag
    assert "O&#39;Brien &amp; Sons &lt;Ltd&gt;" in html and "&lt;b&gt;IDLE&lt;/b&gt;" in html
    assert "Citroën C5 &lt;img" in html and "Zoë Ñúñez 山田" in html
    assert "Link:" not in text  # not an http(s) link: not offered
    assert f"- {HOSTILE_CUSTOMER}, Citroën C5 <img src=x onerror=alert(1)>" in text


def email_target(**extra: Any) -> EmailTarget:
    return EmailTarget(name="manager", smtp_url="smtp://127.0.0.1:25",
                       sender="inspections@north.example", default_to="gm@north.example",
                       events=["account.digest"], **extra)


def parts(message: EmailMessage) -> tuple[str, str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(message["Subject"]), text.get_content(), html.get_content()


def test_build_message_sends_the_digest_to_the_targets_own_address() -> None:
    assert built_in_templates("account.digest").subject == DIGEST_SUBJECT
    message = build_message(email_target(), delivery_id="d-1", body=serialise(DIGEST))
    assert message["To"] == "gm@north.example"
    subject, text, html = parts(message)
    assert subject == "North Toyota: 25 inspections completed, 27 stalled (Saturday 5 December)"
    assert text.startswith("Daily inspection digest: North Toyota\n")
    assert ">Your inspections, Saturday 5 December</h1>" in html


def test_a_recorded_digest_is_delivered_by_email_and_webhook(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    """The latest digest, recorded a minute after its DIGEST_AT and drained on the real
    clock: a receiver refuses a signature timestamp more than five minutes off."""
    day = latest_digest_day(NORTH, digest_at=SEVEN_THIRTY, now=utcnow())
    now = day.due_at + dt.timedelta(minutes=1)
    with sessions.begin() as db:
        seed(db, day.due_at)
    hook = WebhookReceiver()
    with smtp_server() as (mailbox, port), serving(hook.app()) as url:
        targets: list[Target] = [
            EmailTarget(name="manager", smtp_url=f"smtp://127.0.0.1:{port}",
                        sender="inspections@north.example", default_to="gm@north.example",
                        events=["account.digest"]),
            WebhookTarget(name="bi", url=f"{url}/hook", secrets=[hook.secret],
                          events=["account.digest"])]
        with sessions() as db:
            due = digests_due(db=db, accounts=Accounts((NORTH,)), digest_at=SEVEN_THIRTY,
                              targets=targets, now=now)
        with sessions.begin() as db:
            assert record_digests(db=db, days=due, stall_after=STALL_AFTER, targets=targets,
                                  now=now) == 2
        report = drain_outbox(sessions=sessions, settings=make_settings("sqlite://"),
                              targets=targets)
        assert report.delivered == 2
    (message,) = mailbox.messages
    assert message["To"] == "gm@north.example"
    assert " ".join(str(message["Subject"]).split()) == (
        f"North Toyota: 3 inspections completed, 2 stalled ({long_date(day.date.isoformat())})")
    (received,) = hook.received  # signature verified by standardwebhooks
    assert received.body["type"] == "account.digest"
    assert received.body["data"]["outcomes"]["completed"] == 3
    assert json.dumps(received.body["data"]["stalled"][0]["customer_name"]) == '"Jane Smith"'


@pytest.mark.parametrize(("device", "size"), [("phone", PHONE), ("desktop", DESKTOP)])
def test_the_digest_in_chromium(browser: WebDriver, tmp_path: Path,  # noqa: F811
                                device: str, size: tuple[int, int]) -> None:
    _, _, html = rendered(DIGEST)
    picture = draw(browser, html, tmp_path, f"email-digest-{device}", size)

    assert browser.title == "Daily inspection digest"
    assert browser.find_element(By.ID, "dealer").text == "North Toyota"
    assert browser.find_element(By.TAG_NAME, "h1").text == \
        "Your inspections, Saturday 5 December"
    figures = {name: browser.find_element(By.ID, name) for name in
               ("completed", "rate", "median", "stalled-count")}
    assert figures["completed"].text.split("\n") == ["25", "Completed"]
    assert figures["rate"].text.split("\n")[0] == "76%"
    # Two figures side by side, even on a phone: the same row, neither past the edge.
    left, right = figures["completed"].rect, figures["rate"].rect
    assert left["y"] == right["y"] and right["x"] + right["width"] <= size[0]
    assert viewport_fits(browser)
    assert browser.execute_script(
        "return [...document.querySelectorAll('body *')].every("
        "e => e.getBoundingClientRect().right <= window.innerWidth)")
    listed = browser.find_element(By.ID, "stalled").text
    for fact in ("Jane Smith", "2017 Nissan Rogue", "IDLE for 1d 1h", "capture link",
                 "Ahmed Khan", "… and 24 more"):
        assert fact in listed, fact

    DOCS.mkdir(exist_ok=True)
    shutil.copyfile(picture, DOCS / picture.name)


def test_hostile_values_stay_text_in_chromium(browser: WebDriver, tmp_path: Path  # noqa: F811
                                              ) -> None:
    _, _, html = rendered(HOSTILE)
    draw(browser, html, tmp_path, "digest-hostile-phone", PHONE)
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.find_element(By.ID, "dealer").text == HOSTILE_DEALER
    assert HOSTILE_CUSTOMER in browser.find_element(By.ID, "stalled").text
    assert viewport_fits(browser)
