"""The ADF 1.0 lead a completed inspection makes: a trade-in appraisal lead with the
customer, the vehicle (VIN, odometer, colours) and the dealer.

Built with lxml (escaping is the library's job: `O'Brien & Sons <Ltd>` and any Unicode
come out well-formed) and validated against the ADF 1.0 DTD shipped beside this module.
A session whose data cannot make a valid lead raises `LeadIncomplete` naming what is
missing: such a lead is never sent half-formed.

What goes where (SPEC, "ADF/XML leads"):

| ADF                                   | from                                                |
| ------------------------------------- | --------------------------------------------------- |
| prospect/id (sequence 1)              | the delivery id, the same on every retry            |
| prospect/@status                      | "resend" when the delivery was replayed, else "new" |
| vehicle year, make, model, vin, trim  | PAVE's vehicle                                      |
| vehicle/odometer                      | `odom_reading`, digits only; units from `odom_unit` |
| vehicle/colorcombination              | `int_col` / `ext_col`                               |
| vehicle/comments                      | the session key and when the inspection ended       |
| customer/contact name, email, phone   | metadata `customer_name`, `email`, `phone`, else    |
|                                       | PAVE's `options.sms.to_name` / `options.sms.to`     |
| vendor/vendorname                     | the account's `dealer_name`, else `options.sms.by`, |
|                                       | else the account's name                             |
| vendor/contact                        | the target's `from` address, when it has one        |
| provider/name                         | pave-tracker                                        |
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from lxml import etree

from worker.delivery.vehicles import odometer_unit
from worker.errors import LeadIncomplete

DTD_PATH = Path(__file__).with_name("adf-1.0.dtd")
Interest = Literal["trade-in", "sell"]
# What XML 1.0 allows in text: anything else (control characters, lone surrogates from
# JSON's \ud800 escapes) would make lxml refuse the document, so it is left out.
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
LONGEST_TEXT = 500
PROLOG = b'<?xml version="1.0" encoding="UTF-8"?>\n<?adf version="1.0"?>\n'


@lru_cache(maxsize=1)
def adf_dtd() -> etree.DTD:
    return etree.DTD(str(DTD_PATH))


def build_lead(document: dict[str, Any], *, lead_id: str, interest: Interest = "trade-in",
               resend: bool = False, vendor_email: str | None = None,
               now: dt.datetime) -> bytes:
    """The ADF document for an event's `document` (its JSON body), as UTF-8 bytes."""
    data = mapping(document.get("data"))
    vehicle = mapping(data.get("vehicle"))
    if not vehicle:
        raise LeadIncomplete("no vehicle: PAVE has not captured one for this session")
    missing = [part for part in ("year", "make", "model") if not clean(vehicle.get(part))]
    if missing:
        raise LeadIncomplete(f"the vehicle has no {' or '.join(missing)} (ADF needs year, "
                             "make and model)")
    name, email, phone = customer_of(data)
    if not name:
        raise LeadIncomplete("no customer name (metadata customer_name, or PAVE's "
                             "options.sms.to_name)")
    if not email and not phone:
        raise LeadIncomplete("no way to reach the customer: no email or phone (metadata "
                             "email or phone, or PAVE's options.sms.to)")

    adf = etree.Element("adf")
    prospect = child(adf, "prospect", status="resend" if resend else "new")
    child(prospect, "id", lead_id, sequence="1", source="pave-tracker")
    child(prospect, "requestdate", now.astimezone(dt.UTC).isoformat(timespec="seconds"))
    add_vehicle(prospect, vehicle, data, interest=interest)
    contact = child(child(prospect, "customer"), "contact")
    child(contact, "name", name, part="full")
    if email:
        child(contact, "email", email)
    if phone:
        child(contact, "phone", phone)
    vendor = child(prospect, "vendor")
    vendor_name = vendor_name_of(data)
    child(vendor, "vendorname", vendor_name)
    if vendor_email:
        vendor_contact = child(vendor, "contact")
        child(vendor_contact, "name", vendor_name, part="full", type="business")
        child(vendor_contact, "email", vendor_email)
    provider = child(prospect, "provider")
    child(provider, "name", "pave-tracker", part="full", type="business")
    child(provider, "service", "PAVE vehicle inspection")

    dtd = adf_dtd()
    if not dtd.validate(adf):
        first = (str(dtd.error_log).strip().splitlines() or ["?"])[0]
        raise LeadIncomplete(f"not a valid ADF 1.0 lead: {first.split(': ', 1)[-1]}")
    # The prolog as SPEC writes it (lxml's own declaration would use single quotes).
    return PROLOG + bytes(etree.tostring(adf, encoding="UTF-8", xml_declaration=False,
                                         pretty_print=True))


def add_vehicle(prospect: etree._Element, vehicle: dict[str, Any], data: dict[str, Any], *,
                interest: Interest) -> None:
    element = child(prospect, "vehicle", interest=interest, status="used")
    for part in ("year", "make", "model", "vin", "trim"):
        if value := clean(vehicle.get(part)):
            child(element, part, value)
    digits = re.sub(r"\D", "", clean(vehicle.get("odom_reading")))
    if digits:
        units = odometer_unit(clean(vehicle.get("odom_unit")))
        child(element, "odometer", digits, status="original",
              **({"units": units} if units else {}))
    interior, exterior = clean(vehicle.get("int_col")), clean(vehicle.get("ext_col"))
    if interior or exterior:
        colours = child(element, "colorcombination")
        if interior:
            child(colours, "interiorcolor", interior)
        if exterior:
            child(colours, "exteriorcolor", exterior)
    ended = clean(data.get("inspect_ended_at"))
    child(element, "comments", f"PAVE inspection session {clean(data.get('session_key'))}"
          + (f", inspection ended {ended}" if ended else ""))


def customer_of(data: dict[str, Any]) -> tuple[str, str, str]:
    """(name, email, phone): the dealer's metadata first, else what PAVE's SMS says."""
    metadata, sms = mapping(data.get("metadata")), pave_sms(data)
    name = clean(metadata.get("customer_name")) or clean(sms.get("to_name"))
    email = clean(metadata.get("email"))
    phone = clean(metadata.get("phone")) or clean(sms.get("to"))
    return name, email, phone


def vendor_name_of(data: dict[str, Any]) -> str:
    return (clean(data.get("dealer_name")) or clean(pave_sms(data).get("by"))
            or clean(data.get("account")) or "unknown dealer")


def pave_sms(data: dict[str, Any]) -> dict[str, Any]:
    """PAVE's `options.sms`: who the capture link was texted to, and by whom."""
    return mapping(mapping(data.get("options")).get("sms"))


def mapping(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: PAVE may send null or junk."""
    return value if isinstance(value, dict) else {}


def clean(value: object) -> str:
    """Text fit for XML: a string or number, characters XML cannot hold left out,
    whitespace collapsed, bounded."""
    if value is None or isinstance(value, bool | dict | list):
        return ""
    text = NOT_XML.sub("", str(value))
    return " ".join(text.split())[:LONGEST_TEXT]


def child(parent: etree._Element, tag: str, text: str | None = None,
          **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = text
    return element
