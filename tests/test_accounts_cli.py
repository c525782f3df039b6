"""The command line with two PAVE accounts: which account a key goes to, and the
garbage around it (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_accounts_config import TWO_STORES
from tests.test_cli import assert_refused, cli


@pytest.fixture(autouse=True)
def two_stores(settings_from_scratch: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in {"NORTH_KEY": "north-key", "NORTH_SECRET": "north-secret-value",
                        "NORTH_API_TOKENS": "north-api-token-0123456789",
                        "NORTH_PUSH": "north-push-token-0123456789",
                        "SOUTH_KEY": "south-key", "SOUTH_TOKEN": "south-token"}.items():
        monkeypatch.setenv(name, value)
    for name in ("PAVE_API_KEY", "PAVE_USERNAME", "PAVE_API_SECRET", "PAVE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (settings_from_scratch / "pave-tracker.toml").write_text(TWO_STORES)
    return settings_from_scratch


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    status, out, err = cli(capsys, "list", "--json", *args)
    assert status == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def test_keys_are_tracked_under_the_account_named(capsys: pytest.CaptureFixture[str],
                                                  two_stores: Path) -> None:
    assert cli(capsys, "track", "N-1", "N-2", "--account", "north")[0] == 0
    (two_stores / "south.csv").write_text("session_key,account,stock\nS-1,south,A1\n"
                                          "S-2,,A2\n")
    assert cli(capsys, "track", "--file", "south.csv", "--account", "south")[0] == 0
    rows = listed(capsys)
    assert {row["session_key"]: row["account"] for row in rows} == {
        "N-1": "north", "N-2": "north", "S-1": "south", "S-2": "south"}
    assert [row["session_key"] for row in listed(capsys, "--account", "south")] == ["S-1",
                                                                                   "S-2"]
    south = listed(capsys, "--account", "south")[0]
    assert south["dealer_name"] == "South Honda" and south["metadata"] == {"stock": "A1"}
    status, out, _ = cli(capsys, "show", "N-1", "--json")
    assert json.loads(out)["account"] == "north"
    assert json.loads(out)["dealer_name"] == "North Toyota"
    status, out, _ = cli(capsys, "show", "N-1")
    assert "North Toyota" in out


@pytest.mark.parametrize("args, csv, reason", [
    (["track", "N-1"], None, "several accounts (north, south): say which one"),
    (["track", "N-1", "--account", "west"], None,
     "unknown account 'west'; accounts are north, south"),
    (["track", "--file", "keys.csv"], "session_key,account\nN-1,west\n",
     "unknown account 'west'"),
    (["track", "--file", "keys.csv"], "session_key,account\nN-1,north\nN-1,south\n",
     "N-1: asked for under two accounts"),
    (["list", "--account", "west"], None, "unknown account 'west'"),
    (["pave", "register-callbacks", "https://x.example/pave/callbacks"], None,
     "several accounts"),
    (["pave", "register-callbacks", "https://x.example/pave/callbacks", "--account",
      "south"], None, "give [[account]] 'south' a push_token_env first"),
])
def test_account_garbage_exits_2_and_writes_nothing(
        capsys: pytest.CaptureFixture[str], two_stores: Path, args: list[str],
        csv: str | None, reason: str) -> None:
    if csv is not None:
        (two_stores / "keys.csv").write_text(csv)
    assert_refused(cli(capsys, *args), reason)
    assert listed(capsys) == []


def test_a_key_tracked_under_one_account_is_refused_under_another(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "track", "N-1", "--account", "north")[0] == 0
    assert_refused(cli(capsys, "track", "N-1", "N-9", "--account", "south"),
                   "N-1 is already tracked under another account")
    assert [row["session_key"] for row in listed(capsys)] == ["N-1"]  # N-9 neither
    assert cli(capsys, "track", "N-1", "--account", "north")[0] == 0  # idempotent


def test_a_bad_account_stops_run_naming_the_section(capsys: pytest.CaptureFixture[str],
                                                    two_stores: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NORTH_SECRET")
    assert_refused(cli(capsys, "run"), "[[account]] #1: api_secret_env names 'NORTH_SECRET', "
                                       "which is not set")
    assert_refused(cli(capsys, "check"), "[[account]] #1")
