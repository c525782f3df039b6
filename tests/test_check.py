"""`pave-tracker check` against real things: the simulator, PostgreSQL, Redis, receivers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.receivers import SECRET, Sink, smtp_server
from worker.accounts import get_accounts, load_accounts
from worker.check import Finding, run_checks
from worker.config import Settings
from worker.delivery.targets import EmailTarget, HookTarget, Target, WebhookTarget
from worker.pave.simulator import serving


def findings(settings: Settings, *targets: Target) -> dict[str, Finding]:
    return {finding.what: finding
            for finding in run_checks(settings, load_accounts(settings), tuple(targets))}


def test_everything_reachable(pg_url: str, redis_url: str, simulator_url: str) -> None:
    sink = Sink()
    with serving(sink.app()) as hook_url, smtp_server(username="u", password="p") as (_, port):
        targets: list[Target] = [
            WebhookTarget(name="dms", url=f"{hook_url}/secret-path?token=abc",  # type: ignore[arg-type]
                          secrets=[SECRET]),  # type: ignore[list-item]
            EmailTarget(name="mail", smtp_url=f"smtp://u:p@127.0.0.1:{port}",  # type: ignore[arg-type]
                        sender="a@b.co"),
            HookTarget(name="hook", callable="tests.test_delivery:record_hook"),
        ]
        result = findings(make_settings(pg_url, redis_url=redis_url, pave_api_url=simulator_url),
                          *targets)
    assert all(finding.ok for finding in result.values()), result
    assert "migrated" in result["database"].detail
    assert "404" in result["PAVE account default"].detail
    assert "token=abc" not in result["target dms (webhook)"].detail
    assert "logged in" in result["target mail (email)"].detail
    assert sink.received == []  # check sends nothing


def test_every_failure_is_a_clear_line(tmp_path: Path, simulator_url: str) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'new.db'}", pave_api_url=simulator_url,
                             pave_api_secret="wrong-secret",
                             redis_url="redis://127.0.0.1:1/0")
    with smtp_server(username="u", password="p") as (_, port):
        result = findings(
            settings,
            WebhookTarget(name="down", url="http://127.0.0.1:9/hook",  # type: ignore[arg-type]
                          secrets=[SECRET]),  # type: ignore[list-item]
            EmailTarget(name="mail", smtp_url=f"smtp://u:nope@127.0.0.1:{port}",  # type: ignore[arg-type]
                        sender="a@b.co", timeout=2),
            HookTarget(name="gone", callable="tests.nowhere:hook"),
        )
    assert result["database"].ok  # SQLite migrates itself on first use
    failed = {what: finding.detail for what, finding in result.items() if not finding.ok}
    assert set(failed) == {"broker", "PAVE account default", "target down (webhook)",
                           "target mail (email)", "target gone (hook)"}
    assert "refused the credentials" in failed["PAVE account default"]
    assert "Connection refused" in failed["target down (webhook)"]
    assert "cannot load" in failed["target gone (hook)"]
    assert all("\n" not in detail and "wrong-secret" not in detail and "nope" not in detail
               for detail in failed.values())


def test_an_unmigrated_postgresql_fails(simulator_url: str, pg_url: str) -> None:
    from sqlalchemy import text

    from worker.db import engine_for

    with engine_for(pg_url).begin() as connection:
        head = connection.scalar(text("SELECT version_num FROM alembic_version"))
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        result = findings(make_settings(pg_url, pave_api_url=simulator_url))
        assert not result["database"].ok
        assert "pave-tracker db upgrade" in result["database"].detail
    finally:
        with engine_for(pg_url).begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :head"),
                               {"head": head})


@pytest.mark.parametrize("exit_status", [1])
def test_check_command_exits_1_on_failure(
    exit_status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from worker.cli import main
    from worker.config import get_settings
    from worker.delivery.target_config import get_targets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAVE_API_URL", "http://127.0.0.1:9/v1")
    get_settings.cache_clear()
    get_targets.cache_clear()
    get_accounts.cache_clear()
    with pytest.raises(SystemExit) as exited:
        main(["check"])
    get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert exited.value.code == exit_status
    assert "FAIL  PAVE account default: transport" in out and "ok    database" in out
    assert "1 check(s) failed" in err
