"""The HTTP API's request and response bodies: what /openapi.json describes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.accounts import ACCOUNT_NAME_PATTERN
from worker.addresses import is_one_email_address
from worker.models import DeliveryState, Tracking
from worker.tracking.keys import SESSION_KEY_PATTERN

MAX_BATCH = 1000
SessionKey = Annotated[str, Field(pattern=f"^{SESSION_KEY_PATTERN.pattern}$",
                                  examples=["XXX-ABCDE12345"])]
MetadataName = Annotated[str, Field(min_length=1, max_length=100)]
MetadataValue = Annotated[str, Field(max_length=2000)]
Metadata = Annotated[dict[MetadataName, MetadataValue], Field(max_length=50)]
AccountName = Annotated[str, Field(pattern=f"^{ACCOUNT_NAME_PATTERN}$", examples=["north"])]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrackOne(Strict):
    session_key: SessionKey
    metadata: Metadata = Field(default_factory=dict)
    account: AccountName | None = Field(
        default=None, description="The PAVE account; may be left out when the token "
                                  "sees one account only.")

    @field_validator("metadata")
    @classmethod
    def _one_email_address(cls, metadata: dict[str, str]) -> dict[str, str]:
        """The same rule as `track --email` and a CSV's email column."""
        email = metadata.get("email")
        if email and not is_one_email_address(email):
            raise ValueError("email must be one address, like jane@example.com")
        return metadata


class TrackBatch(Strict):
    sessions: Annotated[list[TrackOne], Field(min_length=1, max_length=MAX_BATCH)]


class TrackResult(BaseModel):
    added: int
    restarted: int
    updated: int
    unchanged: int


class HistoryEntry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str | None = Field(alias="from")
    to: str
    observed_at: str | None


class DeliverySummary(BaseModel):
    id: str
    event: str
    target: str
    state: DeliveryState
    attempts: int


class SessionSummary(BaseModel):
    session_key: str
    account: str
    dealer_name: str | None
    status: str | None
    tracking: Tracking
    inspect_started_at: str | None
    inspect_ended_at: str | None
    vehicle: dict[str, Any] | None
    metadata: dict[str, Any]
    capture_url: str | None = Field(description="The customer's capture link (PAVE's "
                                                "redirect_url)")
    status_since: str | None = Field(description="When the current status was first seen")
    polls: int
    last_polled_at: str | None
    next_poll_at: str | None
    last_error: str | None


class SessionDetail(SessionSummary):
    history: list[HistoryEntry]
    deliveries: list[DeliverySummary]


class SessionPage(BaseModel):
    sessions: list[SessionSummary]
    next_offset: int | None = Field(description="Pass as `offset` for the next page; "
                                                "null on the last page.")


class DeliveryDetail(DeliverySummary):
    session_key: str | None = Field(description="null for an account's own event "
                                                "(account.digest)")
    account: str
    created_at: str | None
    delivered_at: str | None
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryDetail]
    next_offset: int | None


class Untracked(BaseModel):
    session_key: str
    stopped: bool


class Replayed(BaseModel):
    id: str
    replayed: int


class PavePush(BaseModel):
    """What PAVE pushes; only `session_key` is used, the rest is never trusted."""

    model_config = ConfigDict(extra="allow")

    event: Annotated[str, Field(max_length=100)]
    session_key: SessionKey


class PushAccepted(BaseModel):
    session_key: str
    outcome: str


class Problem(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
