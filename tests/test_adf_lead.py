"""The ADF 1.0 lead a completed session makes: every field SPEC lists, from what the
tracker holds; well-formed and valid against the shipped DTD whatever the metadata
holds; never half-formed when the session cannot make a lead."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.test_pave_payload import SAMPLE
from worker.delivery.adf.lead import adf_dtd, build_lead
from worker.errors import LeadIncomplete
from worker.pave.payload import parse_session

NOW = dt.datetime(2026, 11, 30, 17, 2, 11, tzinfo=dt.UTC)


def completed(**data: Any) -> dict[str, Any]:
    """The event document of PAVE's own sample session (its vehicle and options)."""
    snapshot = parse_session(SAMPLE)
    document = {"type": "session.completed", "timestamp": "2026-11-30T17:02:11Z", "data": {
        "session_key": snapshot.session_key, "account": "north",
        "dealer_name": "North Toyota", "status": "COMPLETE",
        "inspect_ended_at": "2021-05-25T11:56:05Z", "vehicle": snapshot.vehicle,
        "options": snapshot.options, "metadata": {}}}
    document["data"].update(data)
    return document


def parsed(lead: bytes) -> etree._Element:
    root = etree.fromstring(lead)
    assert adf_dtd().validate(root), adf_dtd().error_log
    return root


def text(root: etree._Element, path: str) -> str | None:
    found = root.find(path)
    return None if found is None else found.text


def test_every_field_from_paves_sample_session() -> None:
    lead = build_lead(completed(), lead_id="msg_0123", vendor_email="desk@north.example",
                      now=NOW)
    assert lead.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<?adf version="1.0"?>\n<adf>')
    root = parsed(lead)
    prospect = root.find("prospect")
    assert prospect is not None and prospect.get("status") == "new"
    identifier = prospect.find("id")
    assert identifier is not None and identifier.text == "msg_0123"
    assert (identifier.get("sequence"), identifier.get("source")) == ("1", "pave-tracker")
    assert text(prospect, "requestdate") == "2026-11-30T17:02:11+00:00"
    vehicle = prospect.find("vehicle")
    assert vehicle is not None
    assert (vehicle.get("interest"), vehicle.get("status")) == ("trade-in", "used")
    assert [text(vehicle, part) for part in ("year", "make", "model", "vin", "trim")] == [
        "2017", "Nissan", "Rogue", "5N1AT2MV0HCXXXXXX", "AWD 4dr S *Ltd Avail*"]
    odometer = vehicle.find("odometer")
    assert odometer is not None and odometer.text == "100945"
    assert (odometer.get("status"), odometer.get("units")) == ("original", "km")
    assert text(vehicle, "colorcombination/interiorcolor") == "Black"
    assert text(vehicle, "colorcombination/exteriorcolor") == "Glacier White"
    assert text(vehicle, "comments") == ("PAVE inspection session XXX-ABCDE12345, "
                                         "inspection ended 2021-05-25T11:56:05Z")
    # The customer from PAVE's SMS options, the metadata saying nothing.
    assert text(prospect, "customer/contact/name") == "Jane Smith"
    assert text(prospect, "customer/contact/phone") == "647-455-XXXX"
    assert text(prospect, "vendor/vendorname") == "North Toyota"
    assert text(prospect, "vendor/contact/email") == "desk@north.example"
    assert text(prospect, "provider/name") == "pave-tracker"


def test_the_dealers_metadata_wins_and_a_replay_is_a_resend() -> None:
    lead = build_lead(completed(dealer_name=None, metadata={
        "customer_name": "Omar Haddad", "email": "omar@example.com", "phone": "555-0100"}),
        lead_id="msg_1", interest="sell", resend=True, now=NOW)
    prospect = parsed(lead).find("prospect")
    assert prospect is not None and prospect.get("status") == "resend"
    assert text(prospect, "customer/contact/name") == "Omar Haddad"
    assert text(prospect, "customer/contact/email") == "omar@example.com"
    assert text(prospect, "customer/contact/phone") == "555-0100"
    assert text(prospect, "vendor/vendorname") == "Steve's Test Dealer"  # options.sms.by
    vehicle = prospect.find("vehicle")
    assert vehicle is not None and vehicle.get("interest") == "sell"
    assert prospect.find("vendor/contact") is None  # no from address to give


@pytest.mark.parametrize("data, missing", [
    ({"vehicle": None}, "no vehicle"),
    ({"vehicle": {"vin": "5N1AT2MV0HCXXXXXX"}}, "the vehicle has no year or make or model"),
    ({"vehicle": {"year": 2017, "make": "Nissan", "model": " "}}, "no model"),
    ({"options": None}, "no customer name"),
    ({"options": {"sms": {"to_name": "Jane"}}}, "no way to reach the customer"),
    ({"options": "junk", "metadata": {"customer_name": "Jane"}}, "no way to reach"),
])
def test_a_session_that_cannot_make_a_lead_says_what_is_missing(
        data: dict[str, Any], missing: str) -> None:
    with pytest.raises(LeadIncomplete, match=missing):
        build_lead(completed(**data), lead_id="msg_1", now=NOW)


HOSTILE = st.one_of(
    st.sampled_from(["O'Brien & Sons <Ltd>", "Ç ß 🚗 ünïcødé", "]]> <!-- --> &amp; \"'",
                     "<script>alert(1)</script>", "\x00\x07\x1b bell", "\ud800 lone",
                     "a" * 5000, "", "  ", "0", "-12,345 km"]),
    st.text(max_size=60),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=HOSTILE, email=HOSTILE, phone=HOSTILE, dealer=HOSTILE, make=HOSTILE,
       odometer=st.one_of(HOSTILE, st.integers()), vin=HOSTILE)
def test_any_metadata_makes_a_valid_lead_or_none(name: str, email: str, phone: str,
                                                 dealer: str, make: str, odometer: object,
                                                 vin: str) -> None:
    document = completed(dealer_name=dealer, metadata={
        "customer_name": name, "email": email, "phone": phone})
    document["data"]["vehicle"] = {**document["data"]["vehicle"], "make": make,
                                   "odom_reading": odometer, "vin": vin}
    # Round-trip through JSON as the outbox stores it.
    document = json.loads(json.dumps(document, ensure_ascii=False).replace("\\ud800", ""))
    try:
        lead = build_lead(document, lead_id="msg_1", now=NOW)
    except LeadIncomplete as exc:
        assert "make" in str(exc) or "customer" in str(exc)
        return
    root = parsed(lead)  # well-formed and valid, or this raises
    make_text = text(root, "prospect/vehicle/make") or ""
    assert make_text and "\x00" not in make_text
    odometer_text = text(root, "prospect/vehicle/odometer")
    assert odometer_text is None or odometer_text.isdigit()
