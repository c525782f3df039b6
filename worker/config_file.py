"""`pave-tracker.toml` (PAVE_TRACKER_CONFIG): read once, its sections handed to whoever
builds them (accounts in `worker.accounts`, targets in `worker.delivery.target_config`).

Secrets never sit in the file: `x_env = "VAR"` takes x from a variable (the environment,
then `.env`), `x_file = "path"` from a file beside the TOML.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from worker.config import Settings
from worker.errors import SettingsError

DEFAULT_CONFIG_FILE = "pave-tracker.toml"
SECTIONS = ("account", "webhook", "email", "crm", "hook", "adf")
# TOML keys that name the key the models use.
RENAMED_KEYS = {"from": "sender", "to": "default_to"}


@dataclass(frozen=True)
class Section:
    """One `[[kind]]` table, its references resolved, and how to name it in an error."""

    kind: str
    label: str
    values: dict[str, Any]
    keys: frozenset[str]  # as written, before `_env` and `_file` were resolved


def read_sections(settings: Settings, kind: str) -> list[Section]:
    """Every `[[kind]]` table of the file, in order; none when there is no file."""
    document, where, folder = _read_document(settings)
    entries = document.get(kind, [])
    if not isinstance(entries, list):
        raise SettingsError(f"bad setting {where}: write [[{kind}]], a list of tables")
    environment = {**dotenv_values(".env"), **os.environ}
    sections = []
    for number, entry in enumerate(entries, start=1):
        label = f"{where} [[{kind}]] #{number}"
        if not isinstance(entry, dict):
            raise SettingsError(f"bad setting {label}: not a table")
        sections.append(Section(kind, label,
                                resolve_references(entry, label, folder, environment),
                                frozenset(entry)))
    return sections


def _read_document(settings: Settings) -> tuple[dict[str, Any], str, Path]:
    path = Path(settings.pave_tracker_config or DEFAULT_CONFIG_FILE)
    where = f"PAVE_TRACKER_CONFIG ({path})"
    if settings.pave_tracker_config is None and not path.exists():
        return {}, where, path.parent
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"bad setting {where}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"bad setting {where}: not TOML: {exc}") from None
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise SettingsError(f"bad setting {where}: unknown section [[{unknown[0]}]]; "
                            f"sections are {', '.join(f'[[{kind}]]' for kind in SECTIONS)}")
    return document, where, path.parent


def resolve_references(entry: dict[str, Any], label: str, folder: Path,
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
