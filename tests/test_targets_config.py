"""Callback targets from the environment shortcuts and the TOML file, and their garbage."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.receivers import OTHER_SECRET, SECRET
from worker.delivery.target_config import load_targets
from worker.delivery.targets import CrmTarget, EmailTarget, HookTarget, WebhookTarget
from worker.errors import SettingsError


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_no_targets_by_default() -> None:
    assert load_targets(make_settings("sqlite://")) == []


def test_environment_shortcuts() -> None:
    settings = make_settings(
        "sqlite://", webhook_url="https://dms.example/hook",
        webhook_secret=f"{SECRET} {OTHER_SECRET}",
        webhook_events="session.completed,session.expired",
        smtp_url="smtps://user:pa%40ss@mail.example:465", email_from="desk@dealer.example",
        email_to="sales@dealer.example",
    )
    webhook, email = load_targets(settings)
    assert isinstance(webhook, WebhookTarget) and webhook.name == "webhook"
    assert [s.get_secret_value() for s in webhook.secrets] == [SECRET, OTHER_SECRET]
    assert webhook.events == ["session.completed", "session.expired"]
    assert isinstance(email, EmailTarget) and email.default_to == "sales@dealer.example"
    assert email.events == ["session.completed"]
    assert "pa%40ss" not in repr(email)


def test_toml_file_with_every_kind(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMS_SECRET", SECRET)
    monkeypatch.setenv("CRM_TOKEN", "Bearer crm-token-value")
    (scratch / "crm.json.j2").write_text('{"vin": {{ vehicle.vin | tojson }}}')
    (scratch / "pave-tracker.toml").write_text(f'''
[[webhook]]
name = "dms"
url = "https://dms.example/hook"
secrets_env = ["DMS_SECRET"]
events = ["session.completed", "tracking.not_found"]
headers = {{ "X-Dealer" = "Main St" }}
timeout = 5

[[webhook]]
name = "inline"
url = "http://127.0.0.1:9/hook"
secrets = ["{OTHER_SECRET}"]

[[email]]
name = "followup"
smtp_url = "smtp://127.0.0.1:2525"
from = "desk@dealer.example"
subject_template = "Done: {{{{ session_key }}}}"

[[crm]]
name = "crm"
url = "https://crm.example/api/leads"
body_template_file = "crm.json.j2"
auth_value_env = "CRM_TOKEN"

[[hook]]
name = "audit"
callable = "tests.test_delivery:record_hook"
events = ["session.status_changed"]
''')
    targets = {t.name: t for t in load_targets(make_settings("sqlite://"))}
    assert set(targets) == {"dms", "inline", "followup", "crm", "audit"}
    dms = targets["dms"]
    assert isinstance(dms, WebhookTarget) and dms.headers == {"X-Dealer": "Main St"}
    assert dms.secrets[0].get_secret_value() == SECRET and dms.timeout == 5
    assert targets["inline"].events == ["session.completed"]
    crm = targets["crm"]
    assert isinstance(crm, CrmTarget) and "tojson" in crm.body_template
    assert crm.auth_value is not None and crm.auth_value.get_secret_value().endswith("value")
    assert isinstance(targets["followup"], EmailTarget)
    assert isinstance(targets["audit"], HookTarget)


@pytest.mark.parametrize(
    "toml, reason",
    [
        ("this is = not [toml", "not TOML"),
        ("[[pager]]\nname = 'x'", "unknown section [[pager]]"),
        ("webhook = 3", "a list of tables"),
        ("[[webhook]]\nname = 'a'\nurl = 'https://x.example'", "secrets: Field required"),
        (f"[[webhook]]\nname = 'a'\nurl = 'not a url'\nsecrets = ['{SECRET}']", "url"),
        ("[[webhook]]\nname = 'a'\nurl = 'https://x.example'\nsecrets = ['nope']",
         "starts with whsec_"),
        ("[[webhook]]\nname = 'a'\nurl = 'https://x.example'\nsecrets = ['whsec_!!']",
         "base64"),
        ("[[webhook]]\nname = 'a'\nurl = 'https://x.example'\nsecrets = ['whsec_QUJD']",
         "24 to 64 bytes"),
        ("[[webhook]]\nname = 'a'\nurl = 'https://x.example'\nsecrets_env = ['MISSING_VAR']",
         "MISSING_VAR"),
        ("[[hook]]\nname = 'a'\ncallable = 'x:y'\nevents = ['session.exploded']",
         "unknown event"),
        ("[[hook]]\nname = 'a'\ncallable = 'x:y'\nevents = []", "at least one event"),
        ("[[hook]]\nname = 'bad name!'\ncallable = 'x:y'", "name"),
        ("[[hook]]\nname = 'a'\ncallable = 'x:y'\ncolour = 'red'", "colour"),
        ("[[hook]]\nname = 'a'\ncallable = 'x:y'\n[[hook]]\nname = 'a'\ncallable = 'x:z'",
         "two targets are named 'a'"),
        ("[[crm]]\nname = 'a'\nurl = 'https://x.example'\nbody_template_file = 'nope.j2'",
         "cannot read body_template_file"),
        ("[[email]]\nname = 'a'\nsmtp_url = 'smtp://h'", "sender: Field required"),
    ],
)
def test_bad_config_files_name_the_setting(scratch: Path, toml: str, reason: str) -> None:
    (scratch / "pave-tracker.toml").write_text(toml)
    with pytest.raises(SettingsError) as caught:
        load_targets(make_settings("sqlite://"))
    message = str(caught.value)
    assert message.startswith("bad setting PAVE_TRACKER_CONFIG")
    assert reason in message and "\n" not in message


def test_a_named_config_file_must_exist(scratch: Path) -> None:
    with pytest.raises(SettingsError, match="No such file"):
        load_targets(make_settings("sqlite://", pave_tracker_config="elsewhere.toml"))


def test_bad_environment_shortcuts() -> None:
    with pytest.raises(Exception, match="WEBHOOK_SECRET"):
        make_settings("sqlite://", webhook_url="https://x.example/hook")
    with pytest.raises(Exception, match="whsec_"):
        make_settings("sqlite://", webhook_url="https://x.example/hook", webhook_secret="abc")
    with pytest.raises(Exception, match="unknown event"):
        make_settings("sqlite://", webhook_events="session.done")
    with pytest.raises(Exception, match="EMAIL_FROM"):
        make_settings("sqlite://", smtp_url="smtp://mail.example")
    with pytest.raises(Exception, match="seconds"):
        make_settings("sqlite://", delivery_retry_schedule="5,-1")
