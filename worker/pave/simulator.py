"""A faithful stand-in for PAVE's `GET /v1/sessions/{key}`, served on loopback.

It checks PAVE's authentication exactly as `pave/README.md` documents it (401 on a
missing header, a wrong key, a wrong token or a timestamp more than five minutes off),
moves each session through a scripted lifecycle in real time, and answers with payloads
shaped like PAVE's published sample, quirks included: microsecond timestamps, the
odometer as a string with a comma, no vehicle until the VIN is captured, and (per
session) the sample's trailing comma.

Tests and integrators script it through a small control API under `/_simulator/`
(it exists only in the simulator), or in-process through `Simulator.add_session()`.
Every answer it gives to a session poll is logged, so a test can compare what the
tracker recorded with what it was served.

It serves several PAVE accounts, as a dealer group's Enterprise dashboard has one branch
account per rooftop. The constructor's credentials are the account named `default`;
`Simulator.add_account()` adds others, each with its own key, user and secret (or static
token). A request is the account's whose `API-Key` it sends. Each session belongs to one
account: asked for with another account's credentials it answers 404 with the body of
an unknown key, as PAVE would. Callbacks are per account too: each registers and lists
its own, and a session's status changes are pushed to its own account's URLs only. For
the tracker's per-account pause, `throttle()` makes one account's session requests
answer 429 and `refuse()` refuses its credentials as if they had been rotated;
`requests_by_account()` counts the session requests each account made.

What it will do for a stranger is bounded, since `simulate` can listen beyond loopback:

- The control API is open while any account uses the published default API key
  (asking for a key printed in `--help` would guard nothing), and asks for one of the
  simulator's own keys (any account's) in the `API-Key` header, as PAVE's endpoints do,
  as soon as every account has a key of its own. `simulate` serves beyond loopback only
  with a key (and secret) of the operator's own, so there the control API is never open.
- Callbacks registered through `/v1/callbacks` must point at this machine (an IP literal
  in 127.0.0.0/8, ::1, or the name `localhost`; nothing is looked up in DNS), so the
  pusher cannot be made to POST chosen headers anywhere else. It follows no redirects.
  PUSH_EVENTS bounds the callbacks: one per event.
- Bodies of the control and callback APIs are read to MAX_BODY_BYTES at most (413
  beyond). Lifecycles have at most MAX_LIFECYCLE_STEPS finite steps and keys at most
  MAX_KEY_LENGTH characters; the control API stores no session past `max_sessions`
  (MAX_SESSIONS unless given; 507 beyond), counting the sessions scripted in-process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import ipaddress
import json
import math
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.accounts import ACCOUNT_NAME
from worker.pave.auth import TIMESTAMP_FORMAT, sign_token

TOKEN_LIFETIME = dt.timedelta(minutes=5)
# The credentials `simulate --help` prints. Anyone can read them, so they protect nothing
# beyond loopback.
DEFAULT_API_KEY = "sim-api-key"
DEFAULT_USERNAME = "sim-user"
DEFAULT_API_SECRET = "sim-api-secret"
# The account the constructor's credentials make, and the one sessions belong to unless
# told otherwise; the tracker's own name for the `PAVE_*` account (SPEC, "Accounts").
DEFAULT_ACCOUNT = "default"
# The tracker's rule for account names (SPEC, "Accounts"), so every name it can be
# configured with can be simulated and no other.
# Room for `simulate --sessions` (at most 100,000) and as many again through the control
# API; the benchmark scripts 100,000 in-process and adds a few hundred over HTTP.
MAX_SESSIONS = 200_000
# A lifecycle or a callback registration is a few hundred bytes.
MAX_BODY_BYTES = 4096
# With the body limit, these keep a stored session to about 8 KB at worst (1.2 KB for a
# six-step lifecycle; measured with tracemalloc), so MAX_SESSIONS bounds memory to under
# 2 GB. The longest scripted lifecycle has 6 steps; PAVE's keys are short.
MAX_LIFECYCLE_STEPS = 32
MAX_KEY_LENGTH = 128
# A step longer than this (or NaN, or infinite) would overflow the datetime arithmetic in
# every later poll and kill the pusher; `null` is how a status stays for good.
MAX_STEP_SECONDS = 366 * 24 * 3600.0
FAULT_KINDS = ("rate_limited", "server_error", "html", "half_json", "timeout", "auth")
PUSH_EVENTS = ("SESSION:STATUS_CHANGE", "SESSION:COMPLETE", "SESSION:STAGE_CHANGE",
               "SESSION:SMS_PROCESS", "SESSION:NOTE_INSERT")
INSPECTION_STARTED = {"STARTED", "PROCESS", "QC_PASSED", "CONFIRM", "COMPLETE"}
INSPECTION_ENDED = {"QC_PASSED", "CONFIRM", "COMPLETE"}
VIN_CAPTURED = {"QC_PASSED", "CONFIRM", "COMPLETE", "INVALID"}

Step = tuple[str, float | None]

# Scripted lifecycles, in seconds per step (`None`: the status stays). `scaled()` makes
# them as fast as a test or demo wants.
LIFECYCLES: dict[str, list[Step]] = {
    "complete": [("IDLE", 4), ("STARTED", 2), ("PROCESS", 3), ("QC_PASSED", 2),
                 ("CONFIRM", 2), ("COMPLETE", None)],
    "skips_to_complete": [("IDLE", 3), ("PROCESS", 2), ("COMPLETE", None)],
    "expired": [("IDLE", 6), ("EXPIRED", None)],
    "invalid": [("IDLE", 2), ("STARTED", 2), ("PROCESS", 2), ("INVALID", None)],
    "unknown_status": [("IDLE", 2), ("PROCESSING", 2), ("WAITING CONFIRM", 2),
                       ("COMPLETE", None)],
    "idle_forever": [("IDLE", None)],
}

SAMPLE_VEHICLE: dict[str, Any] = {
    "vehicle_id": 19880,
    "vin": "5N1AT2MV0HCXXXXXX",
    "year": 2017,
    "make": "Nissan",
    "model": "Rogue",
    "body_type": "Wagon 4 Dr.",
    "trim": "AWD 4dr S *Ltd Avail*",
    "transmission": "AUTOMATIC",
    "drivetrain": "All Wheel Drive",
    "engine_type": "4 Cylinder Engine",
    "fuel_type": "Gasoline Fuel",
    "ext_col": "Glacier White",
    "int_col": "Black",
    "odom_reading": "100,945",
    "odom_unit": "KILOMETRES",
}


def scaled(name: str, factor: float) -> list[Step]:
    return [(status, None if seconds is None else seconds * factor)
            for status, seconds in LIFECYCLES[name]]


def is_loopback_host(host: str) -> bool:
    """An IP literal in 127.0.0.0/8 or ::1, or the name `localhost`. Nothing is looked up
    in DNS: any other name counts as beyond loopback, whatever it resolves to."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secrets_match(given: str, expected: str) -> bool:
    """In constant time; as bytes, since compare_digest refuses non-ASCII str (a header
    Starlette decoded from Latin-1 would raise instead of failing)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def pave_time(moment: dt.datetime) -> str:
    """PAVE's timestamp form: microseconds and a `Z`."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Served:
    at: dt.datetime
    status: str | None  # None: answered 404
    account: str | None = None  # the account whose credentials asked


@dataclass
class SimulatedAccount:
    """One PAVE account: its credentials, its callbacks, and the faults a test set on it.
    Changed only under the simulator's lock."""

    name: str
    api_key: str
    username: str
    api_secret: str | None
    api_token: str | None
    # PAVE's push registrations for this account: one per event of PUSH_EVENTS.
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: bool = False
    throttled: bool = False
    throttled_until: float | None = None  # time.monotonic(); None: until cleared
    retry_after: float | None = None
    requests: int = 0  # session requests made with this account's credentials

    def signs(self, token: str, timestamp: str) -> bool:
        """Whether `token` is this account's for `timestamp`: signed with its secret, or
        its static token."""
        if self.api_secret is not None:
            expected = sign_token(username=self.username, api_key=self.api_key,
                                  api_secret=self.api_secret, timestamp=timestamp)
            if secrets_match(token, expected):
                return True
        return self.api_token is not None and secrets_match(token, self.api_token)

    def throttled_now(self, now: float) -> bool:
        if self.throttled and self.throttled_until is not None and now >= self.throttled_until:
            self.throttled = False
        return self.throttled


@dataclass
class SimulatedSession:
    session_key: str
    lifecycle: list[Step]
    created_at: dt.datetime
    not_found_for: float = 0.0
    trailing_comma: bool = False
    # The lifecycle's clock starts at the first request instead of at creation, so a
    # demo's sessions all start fresh however long the tracker took to come up.
    starts_on_first_request: bool = False
    served: list[Served] = field(default_factory=list)
    account: str = DEFAULT_ACCOUNT
    # Whether its own account has asked yet: another account's 404s start no clock.
    asked_by_owner: bool = False

    def step_at(self, now: dt.datetime) -> tuple[str, dt.datetime] | None:
        """(status, when it began) at `now`, or None while PAVE would still answer 404."""
        elapsed = (now - self.created_at).total_seconds()
        if elapsed < self.not_found_for:
            return None
        began = self.created_at
        for status, seconds in self.lifecycle:
            if seconds is None or now < began + dt.timedelta(seconds=seconds):
                return status, began
            began += dt.timedelta(seconds=seconds)
        return self.lifecycle[-1][0], began

    def first_reached(self, statuses: set[str], now: dt.datetime) -> dt.datetime | None:
        began = self.created_at
        for status, seconds in self.lifecycle:
            if began > now:
                return None
            if status in statuses:
                return began
            if seconds is None:
                return None
            began += dt.timedelta(seconds=seconds)
        return None

    def payload(self, now: dt.datetime) -> dict[str, Any] | None:
        current = self.step_at(now)
        if current is None:
            return None
        status, updated_at = current
        started = self.first_reached(INSPECTION_STARTED, now)
        ended = self.first_reached(INSPECTION_ENDED, now)
        body: dict[str, Any] = {
            "session_key": self.session_key,
            "theme": "PRO",
            "active": status not in {"EXPIRED", "INVALID"},
            "status": status,
            "redirect_url": f"https://dev.paveinspect.com/valet/{self.session_key}/?l=en",
            "inspect_started_at": pave_time(started) if started else None,
            "inspect_ended_at": pave_time(ended) if ended else None,
            "created_at": pave_time(self.created_at),
            "updated_at": pave_time(updated_at),
            "language": "EN",
            "options": {
                "client_id": "SOUTH234889",
                "sms": {"to": "647-455-XXXX", "to_name": "Jane Smith",
                        "from": "647-422-XXXX", "by": "Steve's Test Dealer"},
            },
        }
        if status in VIN_CAPTURED:
            body["vehicle"] = dict(SAMPLE_VEHICLE)
        elif status == "PROCESS":
            body["vehicle"] = {"vin": SAMPLE_VEHICLE["vin"]}
        return body

    def distinct_statuses_served(self) -> list[str]:
        """The statuses served, consecutive repeats and 404s left out."""
        statuses: list[str] = []
        for answer in self.served:
            if answer.status is not None and (not statuses or statuses[-1] != answer.status):
                statuses.append(answer.status)
        return statuses


def inspection_results(session: dict[str, Any]) -> dict[str, Any]:
    """What `GET /sessions/{key}/results` documents: session, vehicle, photos, location,
    and an inspection section with damage counts and the worst grade per item."""
    return {
        "session": {**{k: session[k] for k in ("session_key", "status", "inspect_started_at",
                                               "inspect_ended_at", "created_at")},
                    "capture_duration": 312, "inspect_duration": 256,
                    "user_account": "dealer-demo", "source": "API"},
        "vehicle": session.get("vehicle"),
        "photos": [{"code": code, "url": f"https://photos.example/{session['session_key']}/"
                    f"{code}.jpg"} for code in ("01", "02", "03", "04")],
        "location": {"latitude": 43.65, "longitude": -79.38},
        "inspection": {"damage_count": 2, "grade": {"front_bumper": 3, "rear_door_left": 2},
                       "worst_grade": 3},
    }


def render(body: dict[str, Any], *, trailing_comma: bool) -> bytes:
    text = json.dumps(body, indent=4)
    if trailing_comma:
        # The published sample's own defect: a comma before the closing brace.
        text = text[: text.rindex("}")].rstrip() + ",\n}"
    return text.encode()


class _BodyTooLarge(Exception):
    """A request body over MAX_BODY_BYTES; answered 413 where it is read."""


async def read_json(request: Request) -> Any:
    """The body as JSON, reading no more than MAX_BODY_BYTES of it: a chunked body says
    no Content-Length, so the bytes are counted as they arrive."""
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _BodyTooLarge
    return json.loads(body)


def not_found(key: str) -> Response:
    """PAVE's 404, the same for a key never made and for another account's session."""
    return JSONResponse({"message": f"Session {key} cannot be found."}, status_code=404)


def too_large() -> Response:
    return JSONResponse({"message": f"request body over {MAX_BODY_BYTES} bytes"},
                        status_code=413)


def lifecycle_from(steps: Any) -> list[Step]:
    """A control API lifecycle, [[status, seconds or null], ...], checked; ValueError,
    KeyError or TypeError when it is not one."""
    lifecycle = [(str(status), None if seconds is None else float(seconds))
                 for status, seconds in steps]
    if not 1 <= len(lifecycle) <= MAX_LIFECYCLE_STEPS:
        raise ValueError(f"a lifecycle has 1 to {MAX_LIFECYCLE_STEPS} steps")
    for _, seconds in lifecycle:
        if seconds is not None and not (math.isfinite(seconds)
                                        and 0 <= seconds <= MAX_STEP_SECONDS):
            raise ValueError(f"a step lasts 0 to {MAX_STEP_SECONDS:.0f} seconds, "
                             "or null for good")
    return lifecycle


def loopback_callback_url(url: Any) -> bool:
    """An http(s) URL whose host is loopback, as httpx (the pusher's client) parses it:
    `http://127.0.0.1@elsewhere/` is elsewhere's."""
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else None
    except httpx.InvalidURL:
        return False
    return parsed is not None and parsed.scheme in {"http", "https"} \
        and is_loopback_host(parsed.host)


def header_map(headers: Any) -> dict[str, str] | None:
    """The callback's custom headers, or None unless they are ASCII strings: anything
    else makes httpx raise outside HTTPError, in the pusher thread, and stops it."""
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(
            isinstance(part, str) and part.isascii()
            for pair in headers.items() for part in pair):
        return None
    return dict(headers)


class Simulator:
    """PAVE's session endpoint with scripted sessions. Thread-safe."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        username: str = DEFAULT_USERNAME,
        api_secret: str | None = DEFAULT_API_SECRET,
        api_token: str | None = None,
        fault_rate: float = 0.0,
        fault_delay: float = 2.0,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        # Faults, for chaos runs: each session poll fails this often, with a kind drawn
        # evenly from FAULT_KINDS; a "timeout" answers only after `fault_delay` seconds.
        self.fault_rate = fault_rate
        self.fault_delay = fault_delay
        self.faults: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self._random = random.Random()
        # The constructor's credentials are one account among those add_account() adds;
        # a None secret and token is allowed here, as before accounts, and lets nothing in.
        self._accounts: dict[str, SimulatedAccount] = {DEFAULT_ACCOUNT: SimulatedAccount(
            name=DEFAULT_ACCOUNT, api_key=api_key, username=username,
            api_secret=api_secret, api_token=api_token)}
        self.max_sessions = max_sessions
        self._sessions: dict[str, SimulatedSession] = {}
        self._unknown_served: dict[str, list[Served]] = {}
        self._lock = threading.Lock()
        self.rejected_auth = 0
        self.pushed: list[tuple[float, str, str]] = []  # (time.time(), key, event)
        self._pusher: threading.Thread | None = None
        self._stop_pushing = threading.Event()
        self._last_pushed: dict[str, str] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/callbacks", self._list_callbacks, methods=["GET"]),
                Route("/v1/callbacks", self._post_callback, methods=["POST"]),
                Route("/v1/callbacks/{event}", self._put_callback, methods=["PUT"]),
                Route("/v1/callbacks/{event}", self._delete_callback, methods=["DELETE"]),
                Route("/v1/sessions/{key}", self._get_session, methods=["GET"]),
                Route("/v1/sessions/{key}/results", self._get_results, methods=["GET"]),
                Route("/_simulator/sessions/{key}", self._put_session, methods=["PUT"]),
                Route("/_simulator/sessions/{key}/served", self._get_served, methods=["GET"]),
            ]
        )

    # -- the default account, as the simulator was before accounts --------------------
    @property
    def api_key(self) -> str:
        return self._accounts[DEFAULT_ACCOUNT].api_key

    @property
    def username(self) -> str:
        return self._accounts[DEFAULT_ACCOUNT].username

    @property
    def api_secret(self) -> str | None:
        return self._accounts[DEFAULT_ACCOUNT].api_secret

    @property
    def api_token(self) -> str | None:
        return self._accounts[DEFAULT_ACCOUNT].api_token

    @property
    def callbacks(self) -> dict[str, dict[str, Any]]:
        """The default account's push registrations (see `callbacks_of()`)."""
        return self._accounts[DEFAULT_ACCOUNT].callbacks

    @property
    def control_api_open(self) -> bool:
        """While any account uses the published key, anyone may use that account, so
        asking for a key on the control API would guard nothing and only break what
        scripts the simulator on loopback. Once every key is the operator's own, the
        control API asks for one of them, wherever the simulator listens."""
        with self._lock:
            return any(account.api_key == DEFAULT_API_KEY
                       for account in self._accounts.values())

    # -- accounts -------------------------------------------------------------------
    def add_account(
        self,
        name: str,
        *,
        api_key: str,
        username: str,
        api_secret: str | None = None,
        api_token: str | None = None,
    ) -> SimulatedAccount:
        """Another PAVE account, as a dealer group's branch. ValueError for a name the
        tracker would refuse or one taken, a key another account has, or credentials
        that could never authenticate."""
        if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
            raise ValueError(f"an account name is 1 to 32 of a-z 0-9 - _, not {name!r}")
        if not api_key or not username:
            raise ValueError(f"account {name!r} needs an api_key and a username")
        if not api_secret and not api_token:
            raise ValueError(f"account {name!r} needs an api_secret or an api_token")
        account = SimulatedAccount(name=name, api_key=api_key, username=username,
                                   api_secret=api_secret, api_token=api_token)
        with self._lock:
            if name in self._accounts:
                raise ValueError(f"there is already an account named {name!r}")
            # A request's account is the one whose key it sends: a shared key would
            # make that ambiguous.
            if any(other.api_key == api_key for other in self._accounts.values()):
                raise ValueError(f"account {name!r}: another account has that api_key")
            self._accounts[name] = account
        return account

    def _account(self, name: str) -> SimulatedAccount:
        """Under the lock; KeyError names what is missing."""
        try:
            return self._accounts[name]
        except KeyError:
            raise KeyError(f"no account named {name!r}") from None

    def accounts(self) -> list[str]:
        with self._lock:
            return list(self._accounts)

    def callbacks_of(self, account: str) -> dict[str, dict[str, Any]]:
        """A copy of `account`'s push registrations, by event."""
        with self._lock:
            return dict(self._account(account).callbacks)

    def throttle(self, account: str, *, retry_after: float | None,
                 for_seconds: float | None = None) -> None:
        """Every session request of `account` answers 429 (with `Retry-After:
        retry_after`, a decimal when it is not whole, when given) until `unthrottle()`,
        or for `for_seconds`. Other accounts are served as before."""
        for value in (retry_after, for_seconds):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError("retry_after and for_seconds are seconds, 0 or more")
        with self._lock:
            target = self._account(account)
            target.throttled = True
            target.retry_after = None if retry_after is None else float(retry_after)
            target.throttled_until = (None if for_seconds is None
                                      else time.monotonic() + for_seconds)

    def unthrottle(self, account: str) -> None:
        with self._lock:
            self._account(account).throttled = False

    def refuse(self, account: str, refused: bool = True) -> None:
        """`account`'s credentials answer 401 on every PAVE endpoint, as if they had been
        rotated (`refused=False` takes them back). The control API still takes its key:
        that is the operator's, not PAVE's."""
        with self._lock:
            self._account(account).refused = refused

    def requests_by_account(self) -> dict[str, int]:
        """Session requests (`GET /v1/sessions/{key}` and `/results`) made with each
        account's valid credentials, whatever the answer: refused, throttled, faults
        and 404s included, so a test can tell which accounts the tracker kept asking."""
        with self._lock:
            return {name: account.requests for name, account in self._accounts.items()}

    # -- scripting ----------------------------------------------------------------
    def add_session(
        self,
        session_key: str,
        lifecycle: Sequence[Step],
        *,
        not_found_for: float = 0.0,
        trailing_comma: bool = False,
        created_at: dt.datetime | None = None,
        starts_on_first_request: bool = False,
        account: str = DEFAULT_ACCOUNT,
    ) -> SimulatedSession:
        """A session of `account` (KeyError when there is none by that name)."""
        if not lifecycle:
            raise ValueError("a lifecycle needs at least one step")
        session = SimulatedSession(
            session_key=session_key,
            lifecycle=list(lifecycle),
            created_at=created_at or dt.datetime.now(dt.UTC),
            not_found_for=not_found_for,
            trailing_comma=trailing_comma,
            starts_on_first_request=starts_on_first_request,
            account=account,
        )
        with self._lock:
            self._account(account)
            self._sessions[session_key] = session
        return session

    def session(self, session_key: str) -> SimulatedSession:
        with self._lock:
            return self._sessions[session_key]

    def served(self, session_key: str) -> list[Served]:
        """Every answer given for this key (including 404s for unknown keys)."""
        with self._lock:
            if session_key in self._sessions:
                return list(self._sessions[session_key].served)
            return list(self._unknown_served.get(session_key, []))

    # -- authentication -------------------------------------------------------------
    def _account_with_key(self, key: str) -> SimulatedAccount | None:
        """The account whose API key this is. Every key is compared, each in constant
        time, so the answer's timing tells nothing of which key came close."""
        with self._lock:
            accounts = list(self._accounts.values())
        found = None
        for account in accounts:
            if secrets_match(key, account.api_key):
                found = account
        return found

    def credentials_of(self, headers: Any, now: dt.datetime) -> SimulatedAccount | None:
        """The account whose valid credentials these headers carry, refused or not; None
        on a missing header, an unknown key, a wrong token or a timestamp more than
        TOKEN_LIFETIME off."""
        key = headers.get("API-Key")
        token = headers.get("API-Token")
        timestamp = headers.get("API-Timestamp")
        if not key or not token or not timestamp:
            return None
        account = self._account_with_key(key)
        if account is None:
            return None
        try:
            sent = dt.datetime.strptime(timestamp, TIMESTAMP_FORMAT).replace(tzinfo=dt.UTC)
        except ValueError:
            return None
        if abs(now - sent) > TOKEN_LIFETIME:
            return None
        return account if account.signs(token, timestamp) else None

    def authorised(self, headers: Any, now: dt.datetime) -> bool:
        """Whether PAVE would let these headers in: some account's valid credentials,
        not refused."""
        account = self.credentials_of(headers, now)
        if account is None:
            return False
        with self._lock:
            return not account.refused

    def _authenticate(self, request: Request, now: dt.datetime, *,
                      counted: bool = False) -> SimulatedAccount | Response:
        """The asking account, or PAVE's 401 for a request without valid credentials
        (or with refused ones). `counted`: a session request, for requests_by_account()."""
        account = self.credentials_of(request.headers, now)
        with self._lock:
            if account is not None and counted:
                account.requests += 1
            if account is not None and not account.refused:
                return account
            self.rejected_auth += 1
        return JSONResponse({"message": "Unauthenticated."}, status_code=401)

    def _refuse_control(self, request: Request) -> Response | None:
        """401 for a control API request without one of the simulator's own API keys
        (any account's); None when the control API is open or the key is one of them.
        Not counted in `rejected_auth`, which counts refused PAVE requests."""
        key = request.headers.get("API-Key")
        if self.control_api_open or (key is not None
                                     and self._account_with_key(key) is not None):
            return None
        return JSONResponse({"message": "Unauthenticated."}, status_code=401)

    def _throttled(self, account: SimulatedAccount) -> Response | None:
        """The 429 a throttled account gets, or None."""
        with self._lock:
            if not account.throttled_now(time.monotonic()):
                return None
            retry_after = account.retry_after
        headers = {} if retry_after is None else {"Retry-After": (
            str(int(retry_after)) if retry_after.is_integer() else str(retry_after))}
        return JSONResponse({"message": "Too Many Attempts."}, status_code=429,
                            headers=headers)

    # -- HTTP -----------------------------------------------------------------------
    async def _get_session(self, request: Request) -> Response:
        now = dt.datetime.now(dt.UTC)
        key = request.path_params["key"]
        account = self._authenticate(request, now, counted=True)
        if isinstance(account, Response):
            return account
        if throttled := self._throttled(account):
            return throttled
        fault = self._pick_fault()
        if fault is not None:
            return await self._fault_response(fault)
        with self._lock:
            found = self._sessions.get(key)
            # Another account's session is as unknown to this one as a key never made.
            session = found if found and found.account == account.name else None
            if session and not session.asked_by_owner:
                session.asked_by_owner = True
                if session.starts_on_first_request:
                    session.created_at = now
            body = session.payload(now) if session else None
            log = found.served if found else self._unknown_served.setdefault(key, [])
            log.append(Served(at=now, status=body["status"] if body else None,
                              account=account.name))
        if body is None or session is None:
            return not_found(key)
        return Response(render(body, trailing_comma=session.trailing_comma),
                        media_type="application/json")

    def answers_served(self) -> int:
        """Session polls answered normally (a status or a 404), faults not counted."""
        with self._lock:
            return sum(len(s.served) for s in self._sessions.values()) + sum(
                len(answers) for answers in self._unknown_served.values())

    def _pick_fault(self) -> str | None:
        with self._lock:
            if self.fault_rate <= 0 or self._random.random() >= self.fault_rate:
                return None
            fault = self._random.choice(FAULT_KINDS)
            self.faults[fault] += 1
            return fault

    async def _fault_response(self, fault: str) -> Response:
        if fault == "rate_limited":
            return JSONResponse({"message": "Too Many Attempts."}, status_code=429,
                                headers={"Retry-After": "1"})
        if fault == "server_error":
            return Response("upstream error", status_code=self._random.choice([500, 502, 503]))
        if fault == "html":
            return Response("<html><body><h1>Maintenance</h1></body></html>",
                            media_type="text/html")
        if fault == "half_json":
            return Response(b'{"session_key": "XXX", "status": "COMP',
                            media_type="application/json")
        if fault == "auth":
            return JSONResponse({"message": "Unauthenticated."}, status_code=401)
        await asyncio.sleep(self.fault_delay)  # "timeout": slower than the client waits
        return Response("too late", status_code=504)

    async def _get_results(self, request: Request) -> Response:
        """Opaque inspection results, shaped like PAVE's description, once COMPLETE."""
        now = dt.datetime.now(dt.UTC)
        key = request.path_params["key"]
        account = self._authenticate(request, now, counted=True)
        if isinstance(account, Response):
            return account
        if throttled := self._throttled(account):
            return throttled
        with self._lock:
            session = self._sessions.get(key)
            owned = session is not None and session.account == account.name
            body = session.payload(now) if session and owned else None
        if body is None:
            return not_found(key)
        if body["status"] != "COMPLETE":
            return JSONResponse({"message": "Session is not yet completed."}, status_code=400)
        return JSONResponse(inspection_results(body))

    # -- PAVE's push notifications -------------------------------------------------
    async def _callback_body(
        self, request: Request
    ) -> tuple[SimulatedAccount, dict[str, Any]] | Response:
        """(the asking account, the registration), or the answer refusing it."""
        account = self._authenticate(request, dt.datetime.now(dt.UTC))
        if isinstance(account, Response):
            return account
        try:
            body = await read_json(request)
            if not isinstance(body, dict) or body.get("event") not in PUSH_EVENTS \
                    or not str(body.get("url", "")).startswith(("http://", "https://")):
                raise ValueError
        except _BodyTooLarge:
            return too_large()
        except ValueError:
            return JSONResponse({"message": "event and url are required"}, status_code=422)
        if not loopback_callback_url(body["url"]):
            return JSONResponse({"message": "url must be on this machine: 127.0.0.0/8, "
                                 "[::1] or localhost; the simulator pushes nowhere else"},
                                status_code=422)
        headers = header_map(body.get("headers"))
        if headers is None:
            return JSONResponse({"message": "headers must map ASCII names to ASCII values"},
                                status_code=422)
        return account, {"event": body["event"], "url": body["url"], "headers": headers}

    async def _list_callbacks(self, request: Request) -> Response:
        account = self._authenticate(request, dt.datetime.now(dt.UTC))
        if isinstance(account, Response):
            return account
        with self._lock:
            return JSONResponse(list(account.callbacks.values()))

    async def _post_callback(self, request: Request) -> Response:
        registration = await self._callback_body(request)
        if isinstance(registration, Response):
            return registration
        account, body = registration
        with self._lock:
            if body["event"] in account.callbacks:
                return JSONResponse({"message": "Callback already exists."}, status_code=409)
            account.callbacks[body["event"]] = body
        self._start_pushing()
        return JSONResponse(body, status_code=201)

    async def _put_callback(self, request: Request) -> Response:
        registration = await self._callback_body(request)
        if isinstance(registration, Response):
            return registration
        account, body = registration
        with self._lock:
            account.callbacks[body["event"]] = body
        self._start_pushing()
        return JSONResponse(body)

    async def _delete_callback(self, request: Request) -> Response:
        account = self._authenticate(request, dt.datetime.now(dt.UTC))
        if isinstance(account, Response):
            return account
        with self._lock:
            account.callbacks.pop(request.path_params["event"], None)
        return Response(status_code=204)

    def _start_pushing(self) -> None:
        with self._lock:
            if self._pusher is None:
                self._pusher = threading.Thread(target=self._push_until_closed,
                                                name="pave-simulator-pusher", daemon=True)
                self._pusher.start()

    def close(self, *, timeout: float = 10.0) -> None:
        """Stop the pusher for good: once this returns nothing more is pushed, even to
        callbacks registered later, unless one push outlasts `timeout` (httpx allows
        each push 5 s per phase). Idempotent; harmless on a simulator that never pushed."""
        with self._lock:
            self._stop_pushing.set()
            pusher = self._pusher
        if pusher is not None:
            pusher.join(timeout)

    def _push_until_closed(self) -> None:
        """Push each status change to the URLs its session's account registered, as
        PAVE would."""
        # No redirects: a loopback receiver must not send the pusher elsewhere.
        with httpx.Client(timeout=5, follow_redirects=False) as client:
            while not self._stop_pushing.is_set():
                now = dt.datetime.now(dt.UTC)
                with self._lock:
                    changes = []
                    for key, session in self._sessions.items():
                        step = session.step_at(now)
                        if step and self._last_pushed.get(key) != step[0]:
                            self._last_pushed[key] = step[0]
                            changes.append((key, step[0], session.account))
                    callbacks = {name: dict(account.callbacks)
                                 for name, account in self._accounts.items()}
                for key, status, account_name in changes:
                    events = ["SESSION:STATUS_CHANGE"] + (
                        ["SESSION:COMPLETE"] if status == "COMPLETE" else [])
                    for event in events:
                        callback = callbacks[account_name].get(event)
                        # Checked before each push, so close() waits for at most one.
                        if callback is None or self._stop_pushing.is_set():
                            continue
                        try:
                            client.post(callback["url"], headers=callback["headers"],
                                        json={"event": event, "session_key": key,
                                              "status": status})
                        except httpx.HTTPError:
                            continue  # PAVE documents no retry
                        with self._lock:
                            self.pushed.append((time.time(), key, event))
                self._stop_pushing.wait(0.05)  # returns at once when close() sets it

    async def _put_session(self, request: Request) -> Response:
        if refused := self._refuse_control(request):
            return refused
        key = request.path_params["key"]
        if len(key) > MAX_KEY_LENGTH:
            return JSONResponse({"message": f"a session key has at most {MAX_KEY_LENGTH} "
                                 "characters"}, status_code=400)
        try:
            spec = await read_json(request)
            session = SimulatedSession(
                session_key=key,
                lifecycle=lifecycle_from(spec["lifecycle"]),
                created_at=dt.datetime.now(dt.UTC),
                not_found_for=float(spec.get("not_found_for", 0)),
                trailing_comma=bool(spec.get("trailing_comma", False)),
                account=spec.get("account", DEFAULT_ACCOUNT),
            )
        except _BodyTooLarge:
            return too_large()
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"message": f"bad lifecycle: {exc}"}, status_code=400)
        with self._lock:
            unknown_account = (not isinstance(session.account, str)
                               or session.account not in self._accounts)
            full = key not in self._sessions and len(self._sessions) >= self.max_sessions
            if not unknown_account and not full:
                self._sessions[key] = session
        if unknown_account:
            # Not echoed: it is whatever the caller sent, of any size or type.
            return JSONResponse({"message": "account: no account of that name"},
                                status_code=400)
        if full:
            # 507 Insufficient Storage: the server cannot store it. Not 429, since no
            # wait makes room (sessions are never removed), nor 409, since nothing about
            # this key conflicts; a PUT that replaces a stored key still succeeds.
            return JSONResponse({"message": f"the simulator holds {self.max_sessions} "
                                 "sessions, its limit; replace one or start another"},
                                status_code=507)
        # When its lifecycle's clock started: a test can tell when each step begins.
        return JSONResponse({"session_key": key, "account": session.account,
                             "created_at": pave_time(session.created_at)}, status_code=201)

    async def _get_served(self, request: Request) -> Response:
        if refused := self._refuse_control(request):
            return refused
        key = request.path_params["key"]
        answers = self.served(key)
        return JSONResponse({
            "session_key": key,
            "served": [{"at": pave_time(a.at), "status": a.status, "account": a.account}
                       for a in answers],
        })


class ServerThread:
    """Runs an ASGI app with uvicorn on loopback in a background thread."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.host = host

    @property
    def port(self) -> int:
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start (is the port taken?)")
            threading.Event().wait(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serving(app: Any, *, port: int = 0) -> Iterator[str]:
    """Serve an ASGI app on loopback for the duration; yields its base URL."""
    server = ServerThread(app, port=port)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def running_simulator(simulator: Simulator, *, port: int = 0) -> Iterator[str]:
    """Serve `simulator` on loopback; yields PAVE_API_URL (ending in `/v1`). On exit the
    server stops, then the simulator is closed (its pusher stopped)."""
    try:
        with serving(simulator.app, port=port) as url:
            yield f"{url}/v1"
    finally:
        simulator.close()
