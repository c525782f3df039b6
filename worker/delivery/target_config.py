"""Building the callback targets: the environment shortcuts, then `pave-tracker.toml`
(read by `worker.config_file`).

An attempt must end before its lease does, or another worker leases the delivery and
attempts it again meanwhile. So a target's `timeout` set by hand must be shorter than
LEASE_SECONDS (the rule PAVE_TIMEOUT follows), and a kind's default is cut to half of
LEASE_SECONDS: the shortcuts keep working with a short lease.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from worker.accounts import load_accounts
from worker.config import Settings, get_settings
from worker.config_file import RENAMED_KEYS, read_sections
from worker.delivery.targets import (
    AdfTarget,
    CrmTarget,
    EmailTarget,
    HookTarget,
    Target,
    WebhookTarget,
)
from worker.errors import SettingsError

TARGET_KINDS: dict[str, type[Target]] = {
    "webhook": WebhookTarget, "email": EmailTarget, "crm": CrmTarget, "hook": HookTarget,
    "adf": AdfTarget,
}


# The TOML's own key for a field the model names otherwise, for messages.
AS_WRITTEN = {field: key for key, field in RENAMED_KEYS.items()}


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
    known = load_accounts(settings).names
    for target in targets:
        unknown = [name for name in target.accounts or () if name not in known]
        if unknown:
            raise SettingsError(f"bad setting PAVE_TRACKER_CONFIG: target {target.name!r}: "
                                f"accounts: no account named {unknown[0]!r}; accounts are "
                                f"{', '.join(known)}")
    return targets


def _targets_from_file(settings: Settings) -> list[Target]:
    return [_build_target(section.label, model, _with_defaults(kind, section.values, settings),
                          lease_seconds=settings.lease_seconds)
            for kind, model in TARGET_KINDS.items()
            for section in read_sections(settings, kind)]


def _with_defaults(kind: str, values: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """An `adf` target that e-mails uses SMTP_URL unless it names its own server."""
    if kind == "adf" and "url" not in values and "smtp_url" not in values \
            and settings.smtp_url is not None:
        return {**values, "smtp_url": settings.smtp_url}
    return values


def _build_target(label: str, model: type[Target], values: dict[str, Any], *,
                  lease_seconds: float) -> Target:
    """The target, with a timeout its attempts can keep within their lease."""
    try:
        target = model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        field = AS_WRITTEN.get(field, field)
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


