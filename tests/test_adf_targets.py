"""`adf` targets: their settings and garbage, the POST form against a real server on
loopback, and a lead that cannot be made ending its delivery at once."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.conftest import make_settings
from tests.receivers import Sink
from tests.test_adf_lead import NOW, completed
from worker.delivery.adf.lead import adf_dtd
from worker.delivery.adf.sending import send_adf
from worker.delivery.target_config import load_targets
from worker.delivery.targets import AdfTarget
from worker.errors import SettingsError
from worker.pave.simulator import serving


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRM_TOKEN", "Bearer crm-token-0123")
    return tmp_path


def test_an_email_target_takes_smtp_url_by_default(scratch: Path) -> None:
    (scratch / "pave-tracker.toml").write_text(
        '[[adf]]\nname = "leads"\nto = "leads@crm.example"\nfrom = "desk@dealer.example"\n')
    (target,) = load_targets(make_settings("sqlite://", smtp_url="smtp://127.0.0.1:2525"))
    assert isinstance(target, AdfTarget) and target.smtp_url is not None
    assert target.events == ["session.completed"] and target.interest == "trade-in"


@pytest.mark.parametrize("table, reason", [
    ('to = "leads@crm.example"\nfrom = "desk@dealer.example"\n',
     "give to, from and smtp_url_env"),
    ('to = "leads@crm.example, other@crm.example"\nfrom = "a@b.co"\nurl = "https://x.example"\n',
     "to: must be one e-mail address"),
    ('from = "Desk <desk@dealer.example>"\nurl = "https://x.example"\n',
     "from: must be one e-mail address"),
    ('url = "https://x.example"\ninterest = "buy"\n', "interest"),
    ('url = "ftp://x.example"\n', "url"),
    ('url = "https://x.example"\nevents = ["session.exploded"]\n', "events"),
])
def test_bad_adf_targets_are_refused_naming_the_section(scratch: Path, table: str,
                                                        reason: str) -> None:
    (scratch / "pave-tracker.toml").write_text(f'[[adf]]\nname = "leads"\n{table}')
    with pytest.raises(SettingsError) as refused:
        load_targets(make_settings("sqlite://"))
    assert "[[adf]] #1" in str(refused.value) and reason in str(refused.value)


def test_a_lead_posted_as_xml() -> None:
    sink = Sink()
    target = AdfTarget(name="leads", url="https://placeholder.example",  # type: ignore[arg-type]
                       auth_value="Bearer crm-token-0123", interest="sell")  # type: ignore[arg-type]
    with serving(sink.app()) as url, httpx.Client() as client:
        target = target.model_copy(update={"url": httpx.URL(f"{url}/leads")})
        result = send_adf(client, target, delivery_id="msg_1", now=NOW, resend=False,
                          body=json.dumps(completed()))
    assert result.delivered and result.status_code == 200
    ((headers, body),) = sink.received
    assert headers["content-type"] == "application/xml; charset=utf-8"
    assert headers["idempotency-key"] == "msg_1"
    assert headers["authorization"] == "Bearer crm-token-0123"
    root = etree.fromstring(body)
    assert adf_dtd().validate(root)
    vehicle = root.find("prospect/vehicle")
    assert vehicle is not None and vehicle.get("interest") == "sell"


def test_a_session_without_a_vehicle_is_dead_at_once_and_sends_nothing() -> None:
    sink = Sink()
    with serving(sink.app()) as url, httpx.Client() as client:
        target = AdfTarget(name="leads", url=f"{url}/leads")  # type: ignore[arg-type]
        result = send_adf(client, target, delivery_id="msg_1", now=NOW, resend=False,
                          body=json.dumps(completed(vehicle=None)))
    assert not result.delivered and result.permanent
    assert result.error == "no ADF lead: no vehicle: PAVE has not captured one for this session"
    assert sink.received == []


def test_check_reaches_an_adf_targets_mail_server() -> None:
    from tests.receivers import smtp_server
    from worker.check import check_target

    with smtp_server(username="desk", password="pw-123") as (_, port):
        target = AdfTarget(name="leads", default_to="leads@crm.example",
                           sender="desk@dealer.example",
                           smtp_url=f"smtp://desk:pw-123@127.0.0.1:{port}")  # type: ignore[arg-type]
        line = check_target(target)
    assert line == (f"ADF leads from desk@dealer.example to leads@crm.example, "
                    f"SMTP 127.0.0.1:{port} (plain)")
    assert "pw-123" not in line
