"""`check` and `register-callbacks` with several accounts, against the simulator serving
them: one line per account, and each account registers its own push."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.test_cli import cli
from worker.accounts import load_accounts
from worker.check import run_checks
from worker.pave.simulator import Simulator, running_simulator

STORES = """
[[account]]
name = "north"
api_key_env = "NORTH_KEY"
username = "north-user"
api_secret_env = "NORTH_SECRET"
push_token_env = "NORTH_PUSH"

[[account]]
name = "south"
api_key_env = "SOUTH_KEY"
username = "south-user"
api_secret_env = "SOUTH_SECRET"
"""


@pytest.fixture
def stores(settings_from_scratch: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator()
    simulator.add_account("north", api_key="north-key", username="north-user",
                          api_secret="north-secret")
    simulator.add_account("south", api_key="south-key", username="south-user",
                          api_secret="south-secret")
    for name, value in {"NORTH_KEY": "north-key", "NORTH_SECRET": "north-secret",
                        "NORTH_PUSH": "north-push-token-0123456789",
                        "SOUTH_KEY": "south-key",
                        "SOUTH_SECRET": "rotated-so-wrong"}.items():
        monkeypatch.setenv(name, value)
    for name in ("PAVE_API_KEY", "PAVE_USERNAME", "PAVE_API_SECRET", "PAVE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (settings_from_scratch / "pave-tracker.toml").write_text(STORES)
    with running_simulator(simulator) as url:
        monkeypatch.setenv("PAVE_API_URL", url)
        yield simulator, url


def test_check_says_one_line_per_account(stores: tuple[Simulator, str]) -> None:
    _, url = stores
    settings = make_settings("sqlite://", pave_api_url=url)
    findings = {finding.what: finding for finding in
                run_checks(settings, load_accounts(settings), ())}
    assert findings["PAVE account north"].ok
    assert "credentials accepted" in findings["PAVE account north"].detail
    assert not findings["PAVE account south"].ok
    assert "refused the credentials" in findings["PAVE account south"].detail
    assert "[[account]] 'south'" in findings["PAVE account south"].detail
    assert "rotated-so-wrong" not in findings["PAVE account south"].detail


def test_register_callbacks_for_one_account(capsys: pytest.CaptureFixture[str],
                                            stores: tuple[Simulator, str]) -> None:
    simulator, _ = stores
    url = "http://127.0.0.1:9/pave/callbacks/north"
    status, out, err = cli(capsys, "pave", "register-callbacks", url, "--account", "north")
    assert status == 0, err
    assert "SESSION:COMPLETE: registered" in out
    registered = simulator.callbacks_of("north")
    assert {entry["url"] for entry in registered.values()} == {url}
    assert all(entry["headers"] == {"Authorization": "Bearer north-push-token-0123456789"}
               for entry in registered.values())
    assert simulator.callbacks_of("south") == {}
    assert "north-push-token" not in out
