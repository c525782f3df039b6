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
        ("[[email]]\nname = 'a'\nsmtp_url = 'smtp://h'", "from: Field required"),
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
    with pytest.raises(Exception, match="EMAIL_FROM needs SMTP_URL"):
        make_settings("sqlite://", email_from="desk@dealer.example")
    # SMTP_URL alone is the server `adf` targets default to, not an email target.
    assert load_targets(make_settings("sqlite://", smtp_url="smtp://mail.example")) == []
    with pytest.raises(Exception, match="seconds"):
        make_settings("sqlite://", delivery_retry_schedule="5,-1")


@pytest.mark.parametrize(
    "kind, entry",
    [
        ("webhook", f"url = 'https://dms.example/hook?token=t0ken'\nsecrets = ['{SECRET}']"),
        ("email", "smtp_url = 'smtp://desk:pa55word@mail.example'\nfrom = 'desk@x.example'"),
        ("crm", "url = 'https://crm.example/api'\nbody_template = '{}'"),
        ("hook", "callable = 'x:y'"),
    ],
)
@pytest.mark.parametrize("timeout", [90, 60])
def test_a_timeout_not_shorter_than_the_lease_is_refused(
    scratch: Path, kind: str, entry: str, timeout: int
) -> None:
    """Still waiting when the lease runs out, the attempt would run twice at once."""
    (scratch / "pave-tracker.toml").write_text(
        f"[[{kind}]]\nname = 'slow'\ntimeout = {timeout}\n{entry}\n")
    with pytest.raises(SettingsError) as caught:
        load_targets(make_settings("sqlite://", lease_seconds=60))
    message = str(caught.value)
    assert message.startswith(f"bad setting PAVE_TRACKER_CONFIG ({Path('pave-tracker.toml')}) "
                              f"[[{kind}]] #1: target 'slow': timeout {timeout} s must be "
                              "shorter than LEASE_SECONDS (60 s)")
    for secret in (SECRET, "t0ken", "pa55word"):
        assert secret not in message


def test_a_timeout_shorter_than_the_lease_is_kept(scratch: Path) -> None:
    (scratch / "pave-tracker.toml").write_text(
        "[[hook]]\nname = 'quick'\ncallable = 'x:y'\ntimeout = 59.5\n")
    (hook,) = load_targets(make_settings("sqlite://", lease_seconds=60))
    assert hook.timeout == 59.5


def test_default_timeouts_fit_in_the_lease(scratch: Path) -> None:
    """The shortcuts set no timeout: a short LEASE_SECONDS must not make them unusable."""
    (scratch / "pave-tracker.toml").write_text(
        f"[[hook]]\nname = 'hook'\ncallable = 'x:y'\n"
        f"[[crm]]\nname = 'crm'\nurl = 'https://crm.example/api'\nbody_template = '{{}}'\n"
        f"[[webhook]]\nname = 'dms'\nurl = 'https://dms.example/hook'\nsecrets = ['{SECRET}']"
        "\ntimeout = 2\n")
    shortcuts = {"webhook_url": "https://dms.example/hook", "webhook_secret": SECRET,
                 "smtp_url": "smtp://mail.example", "email_from": "desk@dealer.example"}

    def timeouts(**settings: float) -> dict[str, float]:
        loaded = load_targets(make_settings("sqlite://", **shortcuts, **settings))
        return {target.name: target.timeout for target in loaded}

    assert timeouts() == {"webhook": 15, "email": 30, "hook": 15, "crm": 15, "dms": 2}
    assert timeouts(lease_seconds=40, pave_timeout=5) == {
        "webhook": 15, "email": 20, "hook": 15, "crm": 15, "dms": 2}
    assert timeouts(lease_seconds=3, pave_timeout=1) == {
        "webhook": 1.5, "email": 1.5, "hook": 1.5, "crm": 1.5, "dms": 2}
