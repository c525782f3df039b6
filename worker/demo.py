"""`pave-tracker demo`: the whole product on a fresh machine, in under a minute.

It starts the PAVE simulator and a webhook receiver (which verifies every signature with
the `standardwebhooks` package) on loopback, a real `pave-tracker run` worker on the
embedded database and broker in a temporary folder, tracks a set of simulated sessions
with short, varied lifecycles, shows them moving and their callbacks arriving, prints a
summary and cleans everything up: no process and no file is left behind.

The sessions belong to two stores of a dealer group, two PAVE accounts with credentials
of their own (one signs each request with its secret, the other sends a static token),
set up the way an operator would: `[[account]]` tables, secrets in variables.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import select
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.config import Settings, environment_without_settings
from worker.db import session_factory, utcnow
from worker.models import TrackedSession, Tracking
from worker.pave.simulator import Simulator, Step, running_simulator, scaled, serving
from worker.processes import stop_process_group
from worker.schema import upgrade_database
from worker.tracking.requests import TrackRequest
from worker.tracking.service import track_sessions

SPEED = 0.25  # lifecycles run at four times their scripted pace
EVENTS = ("session.completed,session.expired,session.invalid,tracking.not_found,"
          "session.stalled,session.reminder")
# Nudges, scaled down like the lifecycles: a reminder after 6 s without progress, a stall
# after 8 s in IDLE (in production: hours and a day). Longer than any other session's
# IDLE lasts between two of its polls, so only DEMO-REMINDED's customer is nudged.
NUDGES = {"REMIND_AFTER": "6", "STALL_AFTER": "IDLE=8"}
TERMINAL_EVENT = {"COMPLETE": "session.completed", "EXPIRED": "session.expired",
                  "INVALID": "session.invalid"}


@dataclass(frozen=True)
class DemoSession:
    key: str
    lifecycle: list[Step] | None  # None: PAVE never heard of it
    expected_events: tuple[str, ...]


@dataclass(frozen=True)
class DemoStore:
    account: str
    dealer_name: str
    api_key: str
    username: str | None  # with a secret, each request is signed; else a static token
    secret: str


def demo_stores() -> list[DemoStore]:
    return [DemoStore("north", "North Toyota", "demo-north-key", "north-toyota",
                      base64.b16encode(os.urandom(16)).decode()),
            DemoStore("south", "South Honda", "demo-south-key", None,
                      base64.b16encode(os.urandom(16)).decode())]


def accounts_file(stores: list[DemoStore]) -> str:
    """The `[[account]]` tables an operator would write: secrets only through variables."""
    tables = []
    for store in stores:
        prefix = store.account.upper()
        lines = [f'name = "{store.account}"', f'dealer_name = "{store.dealer_name}"',
                 f'api_key_env = "{prefix}_PAVE_API_KEY"']
        if store.username:
            lines += [f'username = "{store.username}"',
                      f'api_secret_env = "{prefix}_PAVE_API_SECRET"']
        else:
            lines.append(f'api_token_env = "{prefix}_PAVE_API_TOKEN"')
        tables.append("[[account]]\n" + "\n".join(lines) + "\n")
    return "# the demo's two stores; its only target is WEBHOOK_URL\n" + "\n".join(tables)


def store_variables(stores: list[DemoStore]) -> dict[str, str]:
    values = {}
    for store in stores:
        prefix = store.account.upper()
        values[f"{prefix}_PAVE_API_KEY"] = store.api_key
        kind = "API_SECRET" if store.username else "API_TOKEN"
        values[f"{prefix}_PAVE_{kind}"] = store.secret
    return values


def demo_sessions(count: int) -> list[DemoSession]:
    """At least one expired, one invalid, one never found and one whose customer waits
    long enough to be reminded and to stall; the rest complete."""
    fixed = [
        DemoSession("DEMO-EXPIRED", scaled("expired", SPEED), ("session.expired",)),
        DemoSession("DEMO-INVALID", scaled("invalid", SPEED), ("session.invalid",)),
        DemoSession("DEMO-NEVER-FOUND", None, ("tracking.not_found",)),
        DemoSession("DEMO-REMINDED", [("IDLE", 11), ("PROCESS", 1), ("COMPLETE", None)],
                    ("session.reminder", "session.stalled", "session.completed")),
    ]
    completing = ["complete", "skips_to_complete", "unknown_status"]
    others = [
        DemoSession(f"DEMO-{number:03d}",
                    scaled(completing[number % len(completing)], SPEED * (1 + number % 3 / 2)),
                    ("session.completed",))
        for number in range(1, max(count - len(fixed), 1) + 1)
    ]
    return others + fixed


@dataclass
class DemoReceiver:
    """The dealer's side: verifies each webhook, keeps the first of each webhook-id and
    when it arrived."""

    secret: str
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # by webhook-id
    first_arrived: dict[str, float] = field(default_factory=dict)  # time.time(), by id
    arrivals: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/webhooks/pave", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        arrived = time.time()
        body = await request.body()
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            with self.lock:
                self.refused += 1
            return Response(status_code=400)
        with self.lock:
            self.arrivals += 1
            self.events.setdefault(request.headers["webhook-id"], event)
            self.first_arrived.setdefault(request.headers["webhook-id"], arrived)
        return Response(status_code=204)

    def by_session(self) -> dict[str, list[str]]:
        with self.lock:
            seen: dict[str, list[str]] = {}
            for event in self.events.values():
                seen.setdefault(event["data"]["session_key"], []).append(event["type"])
            return seen


@contextmanager
def worker_process(env: dict[str, str], folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`pave-tracker run` in its own process group; stopped with all its children."""
    log = (folder / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--loglevel", "warning"],
        env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield process
    finally:
        stop_process_group(process)
        log.close()


def rows(settings: Settings) -> list[TrackedSession]:
    with session_factory(settings.database_url)() as db:
        return list(db.scalars(select(TrackedSession).order_by(TrackedSession.id)))


def render_table(sessions: list[TrackedSession], received: dict[str, list[str]],
                 elapsed: float, stores: dict[str, str]) -> Table:
    table = Table(title=f"pave-tracker demo · {elapsed:4.1f} s", title_justify="left")
    for header in ("session", "store", "PAVE status", "tracking", "polls",
                   "callbacks received"):
        table.add_column(header)
    for tracked in sessions:
        table.add_row(tracked.session_key, stores.get(tracked.account, tracked.account),
                      tracked.status or "-", tracked.tracking.value,
                      str(tracked.poll_count), ", ".join(received.get(tracked.session_key, [])))
    return table


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(*, count: int, keep_running: bool, timeout: float = 50.0) -> int:
    # SIGTERM ends the demo like Ctrl-C: the worker and the servers are stopped, the
    # temporary folder removed.
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(soft_wrap=True)
    started = time.monotonic()
    planned = demo_sessions(count)
    folder = Path(tempfile.mkdtemp(prefix="pave-tracker-demo-"))
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    stores = demo_stores()
    simulator = Simulator()
    for store in stores:
        simulator.add_account(store.account, api_key=store.api_key,
                              username=store.username or store.account,
                              api_secret=store.secret if store.username else None,
                              api_token=None if store.username else store.secret)
    store_names = {store.account: store.dealer_name for store in stores}
    receiver = DemoReceiver(secret=secret)
    try:
        with ExitStack() as stack:
            pave_url = stack.enter_context(running_simulator(simulator))
            hook_url = stack.enter_context(serving(receiver.app())) + "/webhooks/pave"
            values = {
                "DATABASE_URL": f"sqlite:///{folder / 'demo.db'}",
                "BROKER_URL": f"sqla+sqlite:///{folder / 'broker.db'}",
                "PAVE_API_URL": pave_url, **store_variables(stores), **NUDGES,
                "POLL_INTERVAL": "0.5", "POLL_INTERVAL_IDLE": "1", "DISPATCH_INTERVAL": "0.5",
                "NOT_FOUND_GRACE": "3", "DELIVERY_RETRY_SCHEDULE": "1,2,5",
                "WEBHOOK_URL": hook_url, "WEBHOOK_SECRET": secret, "WEBHOOK_EVENTS": EVENTS,
                "PAVE_TRACKER_CONFIG": str(folder / "pave-tracker.toml"),
            }
            (folder / "pave-tracker.toml").write_text(accounts_file(stores))
            # The stores' variables are the worker's to read (through the file), not settings.
            fields: dict[str, Any] = {name.lower(): value for name, value in values.items()
                                      if name not in store_variables(stores)}
            settings = Settings(_env_file=None, **fields)
            upgrade_database(settings)
            account_of = {s.key: stores[number % len(stores)].account
                          for number, s in enumerate(planned)}
            for planned_session in planned:
                if planned_session.lifecycle is not None:
                    simulator.add_session(planned_session.key, planned_session.lifecycle,
                                          starts_on_first_request=True,
                                          account=account_of[planned_session.key])
            with session_factory(settings.database_url).begin() as db:
                track_sessions(db=db, requests=[
                    TrackRequest(s.key, {"source": "demo"}, account_of[s.key])
                    for s in planned], now=utcnow())
            console.print(f"[bold]pave-tracker demo[/]: PAVE simulator on {pave_url} with "
                          f"two stores ({', '.join(store_names.values())}), webhook receiver "
                          f"on {hook_url}, {len(planned)} sessions, worker starting "
                          f"(files in {folder})")
            worker = stack.enter_context(
                worker_process({**environment_without_settings(), **values}, folder))
            try:
                finished = watch(console, settings, receiver, planned, started, worker,
                                 store_names, keep_running=keep_running, timeout=timeout)
            except KeyboardInterrupt:
                finished = done(settings, receiver, planned)
            if worker.poll() is not None:
                tail = (folder / "worker.log").read_text(errors="replace")[-2000:]
                console.print(f"[red]the worker stopped (exit {worker.returncode})[/]:\n{tail}")
        return summarise(console, settings, receiver, planned, finished,
                         time.monotonic() - started, store_names)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def done(settings: Settings, receiver: DemoReceiver, planned: list[DemoSession]) -> bool:
    received = receiver.by_session()
    return all(tracked.tracking is not Tracking.ACTIVE for tracked in rows(settings)) and all(
        set(s.expected_events) <= set(received.get(s.key, [])) for s in planned)


def watch(console: Console, settings: Settings, receiver: DemoReceiver,
          planned: list[DemoSession], started: float, worker: subprocess.Popen[bytes],
          stores: dict[str, str], *, keep_running: bool, timeout: float) -> bool:
    """Show the sessions until every one has ended and its callback arrived.

    Returns whether they all did; with `keep_running`, only Ctrl-C (or SIGTERM) ends it.
    """
    deadline = time.monotonic() + timeout

    def finished_or_stuck() -> bool | None:
        if worker.poll() is not None:
            return False
        if keep_running:
            return None
        if done(settings, receiver, planned):
            return True
        return False if time.monotonic() > deadline else None

    if console.is_terminal:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                live.update(render_table(rows(settings), receiver.by_session(),
                                         time.monotonic() - started, stores))
                outcome = finished_or_stuck()
                if outcome is not None:
                    return outcome
                time.sleep(0.25)
    seen: set[tuple[str, str]] = set()
    while True:
        # Not a terminal: one line per change instead of a redrawn table.
        for tracked in rows(settings):
            line = (tracked.session_key, f"{tracked.status or '-'} ({tracked.tracking.value}, "
                                         f"{stores.get(tracked.account, tracked.account)})")
            if tracked.status and line not in seen:
                seen.add(line)
                console.print(f"{time.monotonic() - started:5.1f} s  {line[0]}: {line[1]}")
        for key, events in receiver.by_session().items():
            for event in events:
                if (key, event) not in seen:
                    seen.add((key, event))
                    console.print(f"{time.monotonic() - started:5.1f} s  {key}: "
                                  f"callback {event} received, signature verified")
        outcome = finished_or_stuck()
        if outcome is not None:
            return outcome
        time.sleep(0.25)


def summarise(console: Console, settings: Settings, receiver: DemoReceiver,
              planned: list[DemoSession], finished: bool, elapsed: float,
              stores: dict[str, str]) -> int:
    final = {tracked.session_key: tracked for tracked in rows(settings)}
    received = receiver.by_session()
    missing = [s.key for s in planned
               if not set(s.expected_events) <= set(received.get(s.key, []))]
    statuses: dict[str, int] = {}
    for tracked in final.values():
        label = tracked.status if tracked.tracking is Tracking.DONE else tracked.tracking.value
        statuses[label or "-"] = statuses.get(label or "-", 0) + 1
    console.print(render_table(list(final.values()), received, elapsed, stores))
    console.print(
        f"summary: {len(final)} sessions: "
        + ", ".join(f"{n} {label}" for label, n in sorted(statuses.items()))
        + f"; {len(receiver.events)} callbacks received ({receiver.arrivals} requests), "
        f"{receiver.refused} refused signatures; {elapsed:.1f} s"
    )
    if finished and not missing and receiver.refused == 0:
        console.print("[green]demo finished: every session ended and every callback "
                      "arrived, signed[/]")
        return 0
    console.print(f"[red]demo incomplete[/]: no callback yet for {', '.join(missing) or '-'}")
    return 1
