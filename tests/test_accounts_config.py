"""PAVE accounts from the PAVE_* variables and `[[account]]` tables, and their garbage:
every bad account stops with the section named and never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings
from worker.accounts import DEFAULT_ACCOUNT, load_accounts
from worker.delivery.target_config import load_targets
from worker.errors import BadInput, SettingsError

NORTH_SECRET = "north-secret-value-1234"
NO_PAVE_VARIABLES = {"pave_api_key": None, "pave_username": None, "pave_api_secret": None,
                     "pave_api_token": None}
SOUTH_TOKEN = "south-static-token-5678"
NORTH_API_TOKEN = "north-api-token-0123456789"

TWO_STORES = """
[[account]]
name = "north"
dealer_name = "North Toyota"
api_key_env = "NORTH_KEY"
username = "north-toyota"
api_secret_env = "NORTH_SECRET"
rate_limit = 5
timezone = "America/Toronto"
api_tokens_env = "NORTH_API_TOKENS"
push_token_env = "NORTH_PUSH"

[[account]]
name = "south"
dealer_name = "South Honda"
api_key_env = "SOUTH_KEY"
api_token_env = "SOUTH_TOKEN"
api_url = "http://127.0.0.1:8/v1/"
"""


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name, value in {"NORTH_KEY": "north-key", "NORTH_SECRET": NORTH_SECRET,
                        "NORTH_API_TOKENS": f"{NORTH_API_TOKEN},another-token-0123456789",
                        "NORTH_PUSH": "north-push-token-0123456789",
                        "SOUTH_KEY": "south-key", "SOUTH_TOKEN": SOUTH_TOKEN}.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def test_the_pave_variables_are_the_default_account() -> None:
    accounts = load_accounts(make_settings("sqlite://", pave_api_key="key",
                                           pave_username="user", pave_api_secret="secret",
                                           pave_push_token="push-token-0123456789"))
    assert accounts.names == [DEFAULT_ACCOUNT]
    default = accounts.named(DEFAULT_ACCOUNT)
    assert default.has_credentials and default.dealer_name is None
    assert default.push_token is not None
    assert accounts.choose(None) == DEFAULT_ACCOUNT


def test_a_default_account_exists_with_nothing_set() -> None:
    """As before accounts: a tracker with no credentials still starts (`check` says why
    PAVE refuses it)."""
    accounts = load_accounts(make_settings("sqlite://", **NO_PAVE_VARIABLES))
    assert accounts.names == [DEFAULT_ACCOUNT]
    assert not accounts.named(DEFAULT_ACCOUNT).has_credentials


def test_two_stores_from_the_file(scratch: Path) -> None:
    (scratch / "pave-tracker.toml").write_text(TWO_STORES)
    accounts = load_accounts(make_settings("sqlite://", **NO_PAVE_VARIABLES))
    assert accounts.names == ["north", "south"]  # no PAVE_API_KEY: no default
    north, south = accounts.named("north"), accounts.named("south")
    assert north.dealer_name == "North Toyota" and north.timezone == "America/Toronto"
    assert north.api_secret is not None and north.api_secret.get_secret_value() == NORTH_SECRET
    assert [t.get_secret_value() for t in north.api_tokens][0] == NORTH_API_TOKEN
    assert north.rate_limit == 5 and north.api_url == "http://127.0.0.1:9/v1"  # PAVE_API_URL
    assert south.api_url == "http://127.0.0.1:8/v1" and south.api_token is not None
    assert accounts.dealer_names == {"north": "North Toyota", "south": "South Honda"}
    assert NORTH_SECRET not in repr(accounts)
    with pytest.raises(BadInput, match="several accounts"):
        accounts.choose(None)
    with pytest.raises(BadInput, match="unknown account 'west'; accounts are north, south"):
        accounts.choose("west")


def test_the_default_account_beside_the_file(scratch: Path) -> None:
    (scratch / "pave-tracker.toml").write_text(TWO_STORES)
    accounts = load_accounts(make_settings("sqlite://", pave_api_key="key",
                                           pave_api_token="token"))
    assert accounts.names == [DEFAULT_ACCOUNT, "north", "south"]


def account(**fields: object) -> str:
    lines = [f"{name} = {value!r}" if isinstance(value, str) else f"{name} = {value}"
             for name, value in fields.items()]
    return "[[account]]\n" + "\n".join(lines).replace("'", '"') + "\n"


GOOD = {"name": "north", "api_key_env": "NORTH_KEY", "username": "u",
        "api_secret_env": "NORTH_SECRET"}


@pytest.mark.parametrize("text, reason", [
    (account(**{**GOOD, "name": "North Store"}), "[[account]] #1: name: 1 to 32 of a-z"),
    (account(**{**GOOD, "name": "x" * 33}), "[[account]] #1: name"),
    (account(**GOOD) + account(**GOOD), "[[account]] #2: a second account named 'north'"),
    (account(name="north", dealer_name="North"),
     "[[account]] #1: account 'north' has no credentials"),
    (account(name="north", api_key_env="NORTH_KEY"), "has no credentials"),
    (account(**{**GOOD, "api_secret_env": "NOT_SET_ANYWHERE"}),
     "[[account]] #1: api_secret_env names 'NOT_SET_ANYWHERE', which is not set"),
    (account(name="north", api_key_env="NORTH_KEY", api_secret_env="NORTH_SECRET"),
     "username and api_secret_env go together"),
    (account(**{**GOOD, "api_secret": NORTH_SECRET}),
     "[[account]] #1: api_secret is a secret: write api_secret_env"),
    (account(**{**GOOD, "timezone": "Mars/Olympus"}), "timezone: not an IANA timezone"),
    (account(**{**GOOD, "rate_limit": 0}), "rate_limit"),
    (account(**{**GOOD, "api_url": "ftp://pave"}), "api_url: must start with http"),
    (account(**{**GOOD, "colour": "red"}), "colour"),
    (account(**{**GOOD, "push_token_env": "SOUTH_KEY"}), "push_token: needs at least 16"),
    ("account = 3\n", "write [[account]], a list of tables"),
    ("[[acount]]\nname = 'x'\n", "unknown section [[acount]]"),
])
def test_a_bad_account_is_refused_naming_its_section(scratch: Path, text: str,
                                                     reason: str) -> None:
    (scratch / "pave-tracker.toml").write_text(text)
    with pytest.raises(SettingsError) as refused:
        load_accounts(make_settings("sqlite://"))
    assert reason in str(refused.value)
    assert "PAVE_TRACKER_CONFIG" in str(refused.value)
    assert NORTH_SECRET not in str(refused.value) and "north-key" not in str(refused.value)


@pytest.mark.parametrize("overrides, reason", [
    ({"api_tokens": NORTH_API_TOKEN}, "one token is in both API_TOKENS and [[account]] 'north'"),
    ({"pave_api_key": "key", "pave_api_token": "t",
      "pave_push_token": "north-push-token-0123456789"},
     "one token is in both PAVE_PUSH_TOKEN and [[account]] 'north' push_token"),
    ({"pave_push_token": "lonely-push-token-0123"},
     "bad setting PAVE_PUSH_TOKEN: set PAVE_API_KEY"),
    ({"pave_rate_limit": 3}, "bad setting PAVE_RATE_LIMIT: set PAVE_API_KEY"),
])
def test_tokens_have_one_owner_and_pave_variables_need_a_key(
        scratch: Path, overrides: dict[str, object], reason: str) -> None:
    (scratch / "pave-tracker.toml").write_text(TWO_STORES)
    with pytest.raises(SettingsError) as refused:
        load_accounts(make_settings("sqlite://", **{**NO_PAVE_VARIABLES, **overrides}))
    assert reason in str(refused.value)
    assert NORTH_API_TOKEN not in str(refused.value)
    assert "north-push-token" not in str(refused.value)


def test_a_secret_is_never_read_from_a_file_beside_the_config(scratch: Path) -> None:
    (scratch / "secret.txt").write_text(NORTH_SECRET)
    without_secret = {name: value for name, value in GOOD.items() if name != "api_secret_env"}
    (scratch / "pave-tracker.toml").write_text(account(**without_secret)
                                               + 'api_secret_file = "secret.txt"\n')
    with pytest.raises(SettingsError, match="api_secret is a secret: write api_secret_env"):
        load_accounts(make_settings("sqlite://", **NO_PAVE_VARIABLES))


def test_default_named_twice(scratch: Path) -> None:
    (scratch / "pave-tracker.toml").write_text(account(**{**GOOD, "name": "default"}))
    assert load_accounts(make_settings("sqlite://", **NO_PAVE_VARIABLES)).names == ["default"]
    with pytest.raises(SettingsError, match="the PAVE_\\* variables define 'default'"):
        load_accounts(make_settings("sqlite://", pave_api_key="key"))


def test_a_target_names_only_accounts_that_exist(scratch: Path) -> None:
    hook = '[[hook]]\nname = "h"\ncallable = "x:y"\naccounts = ["north", "west"]\n'
    (scratch / "pave-tracker.toml").write_text(TWO_STORES + hook)
    with pytest.raises(SettingsError, match="target 'h': accounts: no account named 'west'"):
        load_targets(make_settings("sqlite://"))
    (scratch / "pave-tracker.toml").write_text(TWO_STORES + hook.replace(', "west"', ""))
    (target,) = load_targets(make_settings("sqlite://"))
    assert target.wants("session.completed", "north")
    assert not target.wants("session.completed", "south")
