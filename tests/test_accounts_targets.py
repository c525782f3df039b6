"""Targets and accounts: a target that names accounts gets only their events; every
event's data, and so every template, carries the account and its dealer's name."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import add_session
from worker.db import utcnow
from worker.delivery.events import Observed
from worker.delivery.outbox import record_events
from worker.delivery.targets import CrmTarget, HookTarget
from worker.delivery.templates import DEFAULT_TEXT, render, render_json, template_context
from worker.models import Delivery, Event, StatusChange, TrackedSession

EVERY_STORE = HookTarget(name="group", callable="x:y")
NORTH_ONLY = HookTarget(name="north-bdc", callable="x:y", accounts=["north"])


def complete(sessions: sessionmaker[Session], key: str, account: str,
             dealer_name: str | None) -> None:
    with sessions.begin() as db:
        tracked = add_session(db, key, account=account, status="COMPLETE",
                              vehicle={"year": 2017, "make": "Nissan", "model": "Rogue"})
        change = StatusChange(session_id=tracked.id, poll_number=1, from_status=None,
                              to_status="COMPLETE", observed_at=utcnow())
        db.add(change)
        db.flush()
        record_events(db=db, tracked=tracked, observed=Observed(change=change),
                      targets=[EVERY_STORE, NORTH_ONLY], now=utcnow(), dealer_name=dealer_name)


def test_a_target_gets_the_accounts_it_names(sessions: sessionmaker[Session]) -> None:
    complete(sessions, "N-1", "north", "North Toyota")
    complete(sessions, "S-1", "south", "South Honda")
    with sessions() as db:
        rows = db.execute(select(TrackedSession.session_key, Delivery.target)
                          .join(Event, Event.session_id == TrackedSession.id)
                          .join(Delivery, Delivery.event_id == Event.id)
                          .where(Event.type == "session.completed")).all()
        bodies = {key: json.loads(body) for key, body in db.execute(
            select(TrackedSession.session_key, Event.body)
            .join(Event, Event.session_id == TrackedSession.id)
            .where(Event.type == "session.completed"))}
    assert sorted(map(tuple, rows)) == [("N-1", "group"), ("N-1", "north-bdc"),
                                        ("S-1", "group")]
    assert bodies["N-1"]["data"]["account"] == "north"
    assert bodies["S-1"]["data"]["dealer_name"] == "South Honda"

    north = template_context(bodies["N-1"])
    assert "Dealer:     North Toyota" in render(DEFAULT_TEXT, north)
    crm = CrmTarget(name="crm", url="https://crm.example/leads",  # type: ignore[arg-type]
                    body_template='{"store": {{ dealer_name | tojson }}, '
                                  '"account": {{ account | tojson }}}')
    assert json.loads(render_json(crm.body_template, north)) == {"store": "North Toyota",
                                                                  "account": "north"}
