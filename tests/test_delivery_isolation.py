"""One bad value never poisons a batch: whatever goes wrong with one delivery is that
delivery's failed attempt, recorded, and its neighbours are delivered exactly once.
Every target kind gets the same hostile session: a list for an e-mail address, a word
where a template adds a number, and markup and non-ASCII in a name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import add_session
from tests.receivers import SECRET, WebhookReceiver
from tests.test_delivery import HOOK_CALLS, drain
from tests.test_outbox import complete
from worker.delivery.targets import CrmTarget, EmailTarget, HookTarget, Target, WebhookTarget
from worker.models import Delivery, DeliveryState
from worker.pave.simulator import serving

HOSTILE = {"email": "a@b.c,a@", "count": "abc", "customer_name": "O'Brien & Sons <Ltd> ß 🚗"}


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    hook = WebhookReceiver()
    with serving(hook.app()) as url:
        yield hook, url


def deliveries(sessions: sessionmaker[Session]) -> dict[str, Delivery]:
    with sessions() as db:
        return {d.target: d for d in db.scalars(select(Delivery))}


def targets_for(url: str) -> list[Target]:
    return [
        WebhookTarget(name="webhook", url=f"{url}/hook", secrets=[SECRET]),
        EmailTarget(name="email", smtp_url="smtp://127.0.0.1:9", sender="desk@dealer.example"),
        CrmTarget(name="crm", url=f"{url}/crm", body_template='{"n": {{ metadata.count + 1 }}}'),
        CrmTarget(name="crm-bad-syntax", url=f"{url}/crm", body_template='{"n": {{ }}'),
        HookTarget(name="hook", callable="tests.test_delivery:record_hook"),
    ]


def test_hostile_metadata_and_templates_fail_alone(
    sessions: sessionmaker[Session], receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    targets = targets_for(url)
    HOOK_CALLS.clear()
    with sessions.begin() as db:
        add_session(db, "ABC-1", status="IDLE", user_metadata=HOSTILE)
    complete(sessions, targets)
    drain(sessions, targets)
    drain(sessions, targets)  # nothing is left to send again
    assert [got.body["data"]["session_key"] for got in hook.received] == ["ABC-1"]
    rows = deliveries(sessions)
    for name in ("webhook", "hook"):
        assert rows[name].state is DeliveryState.DELIVERED and rows[name].attempts == 1
    assert [call["data"]["metadata"] for call in HOOK_CALLS] == [HOSTILE]
    for name, reason in (("email", "cannot build the message"), ("crm", "TypeError"),
                         ("crm-bad-syntax", "template error")):
        assert rows[name].state is DeliveryState.DEAD, name
        assert rows[name].attempts == 1 and reason in (rows[name].last_error or ""), name


def test_a_failure_nothing_foresaw_is_that_deliverys_attempt(
    sessions: sessionmaker[Session], receiver: tuple[WebhookReceiver, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.delivery import draining

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug in a sender")

    monkeypatch.setattr(draining, "send_crm", broken)
    hook, url = receiver
    targets = targets_for(url)[:1] + [CrmTarget(name="crm", url=f"{url}/crm",
                                                body_template='{"ok": true}')]
    complete(sessions, targets)
    drain(sessions, targets)
    rows = deliveries(sessions)
    assert rows["webhook"].state is DeliveryState.DELIVERED and len(hook.received) == 1
    assert rows["crm"].state is DeliveryState.RETRYING and rows["crm"].attempts == 1
    assert "unexpected RuntimeError: a bug in a sender" in (rows["crm"].last_error or "")


BAD_ADDRESSES = ["a@b.c,a@", "a@[b.c", "Jane <jane@example.com>", "a@b", "@b.c",
                 "x@y.co\nBcc: z@q.r", "a b@c.d"]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_an_address_an_email_cannot_be_built_for_is_refused_everywhere(
    address: str, tmp_path: object
) -> None:
    """The CLI (`--email`, `--meta email=`), a CSV's email column and the API refuse it
    alike, before anything is stored."""
    from pathlib import Path

    from worker.api.schemas import TrackOne
    from worker.errors import BadInput
    from worker.tracking.requests import read_csv_requests, validate_metadata

    with pytest.raises(BadInput, match="bad email address"):
        validate_metadata({"email": address})
    csv_file = Path(str(tmp_path)) / "keys.csv"
    quoted = address.replace('"', '""')
    csv_file.write_text(f'session_key,email\nABC-1,"{quoted}"\n', encoding="utf-8")
    if address.strip() == address:  # a CSV cell is stripped of spaces first
        with pytest.raises(BadInput, match=r"line \d: bad email address"):
            read_csv_requests(csv_file)
    with pytest.raises(ValueError, match="one address"):
        TrackOne.model_validate({"session_key": "ABC-1", "metadata": {"email": address}})


def test_one_plain_address_is_accepted() -> None:
    from worker.api.schemas import TrackOne
    from worker.tracking.requests import validate_metadata

    for address in ("jane@example.com", "jane.doe+x@mail.example.co.uk", ""):
        assert validate_metadata({"email": address}) == {"email": address}
        TrackOne.model_validate({"session_key": "ABC-1", "metadata": {"email": address}})
