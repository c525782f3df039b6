"""What a user asks to track: keys with metadata, from arguments or a CSV file."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from worker.accounts import Accounts
from worker.addresses import is_one_email_address
from worker.errors import BadInput
from worker.tracking.keys import validate_session_key

MAX_METADATA_KEYS = 50
MAX_METADATA_VALUE = 2000


@dataclass
class TrackRequest:
    session_key: str
    metadata: dict[str, str] = field(default_factory=dict)
    # The PAVE account's name; None until `assign_accounts` settles it.
    account: str | None = None


def parse_meta_option(pair: str) -> tuple[str, str]:
    """`--meta k=v`: a non-empty name, then anything."""
    name, sep, value = pair.partition("=")
    name = name.strip()
    if not sep or not name:
        raise BadInput(f"bad --meta {pair[:60]!r}: expected NAME=VALUE")
    return name, value


def validate_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_KEYS:
        raise BadInput(f"too much metadata: at most {MAX_METADATA_KEYS} fields")
    for name, value in metadata.items():
        if len(name) > 100 or len(value) > MAX_METADATA_VALUE:
            raise BadInput(f"metadata field {name[:40]!r} is too long")
    email = metadata.get("email")
    if email is not None and email != "" and not is_one_email_address(email):
        raise BadInput(f"bad email address {email[:60]!r}: one address, like jane@example.com")
    return metadata


def merge_requests(requests: Iterable[TrackRequest]) -> list[TrackRequest]:
    """One request per key, in first-seen order; later metadata wins. One key asked for
    under two accounts is refused."""
    merged: dict[str, TrackRequest] = {}
    for request in requests:
        known = merged.get(request.session_key)
        if known is None:
            merged[request.session_key] = TrackRequest(request.session_key,
                                                       dict(request.metadata), request.account)
        elif known.account != request.account:
            raise BadInput(f"{request.session_key}: asked for under two accounts, "
                           f"{known.account!r} and {request.account!r}")
        else:
            known.metadata.update(request.metadata)
    return list(merged.values())


def assign_accounts(requests: Iterable[TrackRequest], accounts: Accounts) -> list[TrackRequest]:
    """Each request's account settled: the one it names (which must exist), or with a
    single account that one; with several, naming one is required."""
    return [TrackRequest(request.session_key, request.metadata,
                         accounts.choose(request.account)) for request in requests]


def read_csv_requests(path: Path) -> list[TrackRequest]:
    """Every row of a CSV with a `session_key` column; other columns become metadata.

    An `account` column names each row's PAVE account. The whole file is checked before
    anything is written: the first bad line is refused with its line number.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None
    return list(_rows(text, str(path)))


def _rows(text: str, name: str) -> Iterator[TrackRequest]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise BadInput(f"{name}: the file is empty")
        columns = [column.strip() for column in header]
        if "session_key" not in columns:
            raise BadInput(f"{name} line 1: no session_key column in the header")
        if len(set(columns)) != len(columns):
            raise BadInput(f"{name} line 1: a column name appears twice")
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(columns):
                raise BadInput(f"{name} line {line}: more fields than the header has")
            cells = dict(zip(columns, row, strict=False))
            try:
                key = validate_session_key(cells.get("session_key", "").strip())
                metadata = {column: value.strip() for column, value in cells.items()
                            if column not in ("session_key", "account", "") and value.strip()}
                account = cells.get("account", "").strip() or None
                yield TrackRequest(key, validate_metadata(metadata), account)
            except BadInput as exc:
                raise BadInput(f"{name} line {line}: {exc}") from None
    except csv.Error as exc:
        raise BadInput(f"{name} line {reader.line_num}: {exc}") from None
