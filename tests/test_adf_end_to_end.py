"""ADF leads from a real `pave-tracker run` to a real SMTP server (aiosmtpd): the e-mail a
CRM's lead parser takes, the document valid against the DTD, its fields the simulator's
session; a session with no vehicle ends `dead` with the reason; a replay is a resend."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lxml import etree

from tests.processes import command, start_run, stop, tracker_env, wait_until
from tests.receivers import smtp_server
from worker.delivery.adf.lead import adf_dtd
from worker.pave.simulator import Simulator, scaled

LEADS = """
[[adf]]
name = "crm-leads"
to = "leads@north.crm.example"
from = "inspections@north.example"
events = ["session.completed", "session.expired"]
"""


def test_a_completed_inspection_reaches_the_crm_as_an_adf_lead(
    simulator_for_e2e: tuple[Simulator, str], tmp_path: Path,
    tracker_process: list[subprocess.Popen[bytes]],
) -> None:
    simulator, simulator_url = simulator_for_e2e
    (tmp_path / "pave-tracker.toml").write_text(LEADS)
    with smtp_server() as (mailbox, port):
        env = tracker_env(simulator_url, SMTP_URL=f"smtp://127.0.0.1:{port}",
                          DELIVERY_RETRY_SCHEDULE="0.3,0.3")
        simulator.add_session("ADF-COMPLETE", scaled("complete", 0.1))
        simulator.add_session("ADF-EXPIRED", scaled("expired", 0.1))
        command(env, tmp_path, "track", "ADF-COMPLETE", "--meta",
                "customer_name=Zoë O'Brien & Sons <Ltd>", "--email", "zoe@example.com")
        command(env, tmp_path, "track", "ADF-EXPIRED")
        process = start_run(env, tmp_path, tracker_process)

        def deliveries() -> dict[str, dict[str, object]]:
            rows = json.loads(command(env, tmp_path, "deliveries", "--json"))
            return {str(row["session_key"]): row for row in rows}

        wait_until(lambda: {row["state"] for row in deliveries().values()}
                   == {"delivered", "dead"} and len(mailbox.messages) == 1, 60,
                   "the lead never arrived: " + command(env, tmp_path, "deliveries"))
        rows = deliveries()
        command(env, tmp_path, "replay", str(rows["ADF-COMPLETE"]["id"]))
        wait_until(lambda: len(mailbox.messages) == 2, 30, "the replay never arrived")
        preview = command(env, tmp_path, "adf", "ADF-COMPLETE")
        stop(process)

    assert rows["ADF-EXPIRED"]["state"] == "dead"
    assert "no ADF lead: no vehicle" in str(rows["ADF-EXPIRED"]["last_error"])
    first, again = mailbox.messages
    assert first.get_content_type() == "text/plain" and not first.is_multipart()
    assert first.get_content_charset() == "utf-8"
    assert first["From"] == "inspections@north.example"
    assert first["To"] == "leads@north.crm.example"
    message_id = f"<{rows['ADF-COMPLETE']['id']}@pave-tracker>"
    assert first["Message-ID"] == again["Message-ID"] == message_id
    assert "2017 Nissan Rogue" in first["Subject"] and "ADF-COMPLETE" in first["Subject"]
    body = first.get_payload(decode=True)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(body)
    assert adf_dtd().validate(root), adf_dtd().error_log
    prospect = root.find("prospect")
    assert prospect is not None and prospect.get("status") == "new"
    assert prospect.findtext("id") == rows["ADF-COMPLETE"]["id"]
    assert prospect.findtext("vehicle/vin") == "5N1AT2MV0HCXXXXXX"
    assert prospect.findtext("vehicle/odometer") == "100945"
    assert prospect.findtext("customer/contact/name") == "Zoë O'Brien & Sons <Ltd>"
    assert prospect.findtext("customer/contact/email") == "zoe@example.com"
    assert prospect.findtext("vendor/vendorname") == "Steve's Test Dealer"  # PAVE's sms.by
    resent = etree.fromstring(again.get_payload(decode=True)).find("prospect")
    assert resent is not None and resent.get("status") == "resend"
    preview_root = etree.fromstring(preview.encode())
    assert adf_dtd().validate(preview_root)
    assert preview_root.findtext("prospect/vehicle/vin") == "5N1AT2MV0HCXXXXXX"
