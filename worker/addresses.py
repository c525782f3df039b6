"""E-mail addresses as the standard library's e-mail package, which builds our messages,
reads them: checked where they come in (CLI, CSV, API, targets), never found bad at send."""

from __future__ import annotations

from email.headerregistry import AddressHeader, HeaderRegistry
from typing import cast

_addresses = HeaderRegistry()


def is_one_email_address(value: str) -> bool:
    """One plain address (`jane@example.com`) that the standard library's e-mail package,
    which builds the follow-up e-mails, parses without a defect: a list, a display name,
    a missing domain or a control character is not one."""
    try:
        header = _addresses("To", value)
    except Exception:  # it raises IndexError, AttributeError… on some garbage
        return False
    addresses = cast(AddressHeader, header).addresses  # "To" makes an AddressHeader
    if header.defects or len(addresses) != 1:
        return False
    address = addresses[0]
    return address.addr_spec == value and "." in address.domain
