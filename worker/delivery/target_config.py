"""Building the callback targets: the environment shortcuts, then `pave-tracker.toml`.

An attempt must end before its lease does, or another worker leases the delivery and
attempts it again meanwhile. So a target's `timeout` set by hand must be shorter than
LEASE_SECONDS (the rule PAVE_TIMEOUT follows), and a kind's default is cut to half of
LEASE_SECONDS: the shortcuts keep working with a short lease.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import ValidationError

from worker.config import Settings, get_settings
from worker.delivery.targets import CrmTarget, EmailTarget, HookTarget, Target, WebhookTarget
from worker.errors import SettingsError

DEFAULT_CONFIG_FILE = "pave-tracker.toml"
TARGET_KINDS: dict[str, type[Target]] = {
    "webhook": WebhookTarget, "email": EmailTarget, "crm": CrmTarget, "hook": HookTarget,
}
# TOML keys that name the key the target model uses.
RENAMED_KEYS = {"from": "sender", "to": "default_to"}


def load_targets(settings: Settings) -> list[Target]:
    """The targets from the environment shortcuts, then from the TOML file."""
    targets: list[Target] = []
    if settings.webhook_url and settings.webhook_secret:
        secrets = settings.webhook_secret.get_secret_value().replace(",", " ").split()
        targets.append(_build_target("WEBHOOK_URL", WebhookTarget, {
            "name": "webhook", "url": settings.webhook_url, "secrets": secrets,
            "events": settings.webhook_events,
        }, lease_seconds=settings.lease_seconds))
    if settings.smtp_url and settings.email_from:
        targets.append(_build_target("SMTP_URL", EmailTarget, {
            "name": "email", "smtp_url": settings.smtp_url, "sender": settings.email_from,
            "default_to": settings.email_to, "events": settings.email_events,
        }, lease_seconds=settings.lease_seconds))
    targets += _targets_from_file(settings)
    names = [target.name for target in targets]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SettingsError(f"bad setting PAVE_TRACKER_CONFIG: two targets are named "
                            f"{duplicates[0]!r}")
    return targets


def _targets_from_file(settings: Settings) -> list[Target]:
    path = Path(settings.pave_tracker_config or DEFAULT_CONFIG_FILE)
    if settings.pave_tracker_config is None and not path.exists():
        return []
    where = f"PAVE_TRACKER_CONFIG ({path})"
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"bad setting {where}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"bad setting {where}: not TOML: {exc}") from None
    unknown = sorted(set(document) - set(TARGET_KINDS))
    if unknown:
        raise SettingsError(f"bad setting {where}: unknown section [[{unknown[0]}]]; "
                            f"sections are {', '.join(f'[[{kind}]]' for kind in TARGET_KINDS)}")
    environment = {**dotenv_values(".env"), **os.environ}
    targets: list[Target] = []
    for kind, model in TARGET_KINDS.items():
        entries = document.get(kind, [])
        if not isinstance(entries, list):
            raise SettingsError(f"bad setting {where}: write [[{kind}]], a list of tables")
        for number, entry in enumerate(entries, start=1):
            label = f"{where} [[{kind}]] #{number}"
            if not isinstance(entry, dict):
                raise SettingsError(f"bad setting {label}: not a table")
            values = _resolve_references(entry, label, path.parent, environment)
            targets.append(_build_target(label, model, values,
                                         lease_seconds=settings.lease_seconds))
    return targets


def _resolve_references(entry: dict[str, Any], label: str, folder: Path,
                        environment: Mapping[str, str | None]) -> dict[str, Any]:
    """`x_env = "VAR"` takes x from a variable, `x_file = "path"` from a file beside the TOML."""
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key.endswith("_env"):
            name = key.removesuffix("_env")
            variables = value if isinstance(value, list) else [value]
            resolved = []
            for variable in variables:
                if not isinstance(variable, str) or not environment.get(variable):
                    raise SettingsError(f"bad setting {label}: {key} names {variable!r}, "
                                        "which is not set")
                resolved.append(environment[variable])
            values[name] = resolved if isinstance(value, list) else resolved[0]
        elif key.endswith("_file") and key != "ca_file":
            name = key.removesuffix("_file")
            try:
                values[name] = (folder / str(value)).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SettingsError(f"bad setting {label}: cannot read {key} {value!r}: "
                                    f"{getattr(exc, 'strerror', None) or exc}") from None
        else:
            values[RENAMED_KEYS.get(key, key)] = value
    return values


def _build_target(label: str, model: type[Target], values: dict[str, Any], *,
                  lease_seconds: float) -> Target:
    """The target, with a timeout its attempts can keep within their lease."""
    try:
        target = model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"bad setting {label}: {field}: {message}") from None
    if "timeout" not in target.model_fields_set:
        return target.model_copy(update={"timeout": min(target.timeout, lease_seconds / 2)})
    if target.timeout >= lease_seconds:
        raise SettingsError(
            f"bad setting {label}: target {target.name!r}: timeout {target.timeout:g} s "
            f"must be shorter than LEASE_SECONDS ({lease_seconds:g} s), or another worker "
            "attempts the delivery again while this one is still waiting")
    return target


@lru_cache(maxsize=1)
def get_targets() -> tuple[Target, ...]:
    return tuple(load_targets(get_settings()))


