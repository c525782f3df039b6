"""The `pave-tracker` command.

Exit status 0 on success, 2 for bad input (one line on stderr), 1 for anything else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from worker.accounts import DEFAULT_ACCOUNT, get_accounts
from worker.config import Settings, get_settings
from worker.db import session_factory, utcnow
from worker.delivery import outbox
from worker.delivery.target_config import get_targets
from worker.delivery.views import DELIVERY_ID, delivery_detail, delivery_summary
from worker.errors import BadInput, PaveTrackerError
from worker.models import DeliveryState, Tracking
from worker.schema import ensure_schema, upgrade_database
from worker.tracking import service
from worker.tracking.keys import validate_session_key
from worker.tracking.requests import (
    TrackRequest,
    assign_accounts,
    merge_requests,
    parse_meta_option,
    read_csv_requests,
    validate_metadata,
)
from worker.views import iso, session_detail, session_summary, spell_duration

PROG = "pave-tracker"
PROGRESS_THRESHOLD = 2000


@contextmanager
def database(settings: Settings) -> Iterator[Session]:
    """One transaction on a database that is known to be migrated."""
    ensure_schema(settings)
    with session_factory(settings.database_url).begin() as db:
        yield db


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long work (a big CSV); nothing for a few keys."""
    if total < PROGRESS_THRESHOLD:
        yield lambda done: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr,
                           show_pos=True, show_eta=True) as bar:
        yield bar.update


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Track PAVE inspection sessions and tell other systems when they change."""


@cli.command()
@click.argument("keys", nargs=-1)
@click.option("--meta", multiple=True, metavar="NAME=VALUE", help="Metadata for every key.")
@click.option("--email", metavar="ADDR", help="Shorthand for --meta email=ADDR.")
@click.option("--file", "csv_file", type=click.Path(path_type=Path),
              help="CSV with a session_key column (and an optional account column); other "
                   "columns become metadata.")
@click.option("--account", metavar="NAME",
              help="The PAVE account the keys belong to; needed when there are several.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def track(keys: tuple[str, ...], meta: tuple[str, ...], email: str | None,
          csv_file: Path | None, account: str | None, as_json: bool) -> None:
    """Start tracking session KEYS (idempotent)."""
    metadata = dict(parse_meta_option(pair) for pair in meta)
    if email is not None:
        metadata["email"] = email
    metadata = validate_metadata(metadata)
    requests = [TrackRequest(validate_session_key(key), dict(metadata), account=account)
                for key in keys]
    if csv_file is not None:
        for request in read_csv_requests(csv_file):
            request.metadata = {**metadata, **request.metadata}
            request.account = request.account or account
            requests.append(request)
    if not requests:
        raise BadInput("nothing to track: give session keys or --file")
    requests = assign_accounts(requests, get_accounts())

    settings = get_settings()
    unique = len(merge_requests(requests))
    with database(settings) as db, progress_bar(unique, "tracking") as advance:
        summary = service.track_sessions(db=db, requests=requests, now=utcnow(),
                                         progress=advance)
    if as_json:
        print_json(summary.__dict__)
    else:
        click.echo(f"tracking {unique} session(s): "
                   f"{summary.added} new, {summary.restarted} restarted, "
                   f"{summary.updated} updated, {summary.unchanged} unchanged")


@cli.command()
@click.argument("keys", nargs=-1, required=True)
def untrack(keys: tuple[str, ...]) -> None:
    """Stop tracking session KEYS (tracking becomes `stopped`)."""
    valid = [validate_session_key(key) for key in keys]
    settings = get_settings()
    with database(settings) as db:
        stopped = service.untrack_sessions(db=db, keys=valid, now=utcnow())
    click.echo(f"stopped {stopped} session(s)")


@cli.command(name="list")
@click.option("--tracking", type=click.Choice([state.value for state in Tracking]))
@click.option("--status", help="PAVE status, as PAVE sends it (e.g. COMPLETE).")
@click.option("--account", metavar="NAME", help="One PAVE account's sessions only.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many sessions.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(tracking: str | None, status: str | None, account: str | None,
                 limit: int | None, as_json: bool) -> None:
    """Tracked sessions, oldest first."""
    settings = get_settings()
    accounts = get_accounts()
    if account is not None:
        accounts.named(account)
    with database(settings) as db:
        sessions = service.list_sessions(
            db=db, tracking=Tracking(tracking) if tracking else None, status=status,
            accounts=[account] if account is not None else None, limit=limit,
        )
        dealer_names = accounts.dealer_names
        rows = [session_summary(tracked, dealer_name=dealer_names.get(tracked.account))
                for tracked in sessions]
    if as_json:
        print_json(rows)
        return
    print_rows(rows, [("session_key", "SESSION"), ("account", "ACCOUNT"), ("status", "STATUS"),
                      ("tracking", "TRACKING"), ("polls", "POLLS"),
                      ("last_polled_at", "LAST POLL"), ("next_poll_at", "NEXT POLL"),
                      ("last_error", "LAST ERROR")])
    click.echo(f"{len(rows)} session(s)")


def print_rows(rows: Sequence[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """A plain table: one column per (field, header), cells cut at 60 characters."""
    cells = [[header for _, header in columns]]
    cells += [["" if row[name] is None else str(row[name])[:60] for name, _ in columns]
              for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                        strict=True)).rstrip())


@cli.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(key: str, as_json: bool) -> None:
    """One session: fields, status history, deliveries."""
    key = validate_session_key(key)
    settings = get_settings()
    with database(settings) as db:
        tracked = service.find_session(db=db, session_key=key)
        history = service.session_history(db=db, session_id=tracked.id)
        deliveries = [delivery_summary(row) for row
                      in outbox.list_deliveries(db=db, session_id=tracked.id)]
        detail = session_detail(tracked, history, deliveries=deliveries,
                                dealer_name=get_accounts().dealer_names.get(tracked.account))
    if as_json:
        print_json(detail)
        return
    for name in ("session_key", "account", "dealer_name", "status", "tracking",
                 "inspect_started_at", "inspect_ended_at", "polls", "last_polled_at",
                 "next_poll_at", "last_error"):
        click.echo(f"{name + ':':<20}{'-' if detail[name] is None else detail[name]}")
    vehicle = detail["vehicle"] or {}
    described = " ".join(str(vehicle[part]) for part in ("year", "make", "model", "vin")
                         if vehicle.get(part))
    click.echo(f"{'vehicle:':<20}{described or '-'}")
    click.echo(f"{'metadata:':<20}{json.dumps(detail['metadata']) if detail['metadata'] else '-'}")
    click.echo("history:")
    for change in detail["history"]:
        click.echo(f"  {change['observed_at']}  {change['from'] or '(first seen)'} -> "
                   f"{change['to']}")
    if not detail["history"]:
        click.echo("  (no status seen yet)")
    click.echo("deliveries:")
    for delivery in detail["deliveries"]:
        click.echo(f"  {delivery['id']}  {delivery['event']} -> {delivery['target']}: "
                   f"{delivery['state']} after {delivery['attempts']} attempt(s)")
    if not detail["deliveries"]:
        click.echo("  (none)")


@cli.command()
@click.option("--state", type=click.Choice([state.value for state in DeliveryState]))
@click.option("--limit", type=click.IntRange(min=1), help="At most this many deliveries.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def deliveries(state: str | None, limit: int | None, as_json: bool) -> None:
    """The outbox: every event for every target, and how its delivery went."""
    settings = get_settings()
    with database(settings) as db:
        rows = [delivery_detail(row) for row
                in outbox.list_deliveries(db=db, state=DeliveryState(state) if state else None,
                                          limit=limit)]
    if as_json:
        print_json(rows)
        return
    print_rows(rows, [("id", "DELIVERY"), ("session_key", "SESSION"), ("account", "ACCOUNT"),
                      ("event", "EVENT"),
                      ("target", "TARGET"), ("state", "STATE"), ("attempts", "ATTEMPTS"),
                      ("next_attempt_at", "NEXT ATTEMPT"), ("last_error", "LAST ERROR")])
    click.echo(f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}")


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--dead", "all_dead", is_flag=True, help="Every dead delivery.")
def replay(ids: tuple[str, ...], all_dead: bool) -> None:
    """Deliver again, from the start of the retry schedule, under the same ids."""
    if bool(ids) == all_dead:
        raise BadInput("give delivery ids, or --dead alone")
    for delivery_id in ids:
        if not DELIVERY_ID.fullmatch(delivery_id):
            raise BadInput(f"bad delivery id {delivery_id[:60]!r}: expected msg_ and 32 hex "
                           "digits")
    settings = get_settings()
    with database(settings) as db:
        replayed = outbox.replay_deliveries(db=db, ids=list(ids), all_dead=all_dead,
                                            now=utcnow())
    click.echo(f"replaying {replayed} deliver{'y' if replayed == 1 else 'ies'}")


@cli.command()
@click.option("--account", metavar="NAME", help="One PAVE account's sessions only.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many sessions.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stalled(account: str | None, limit: int | None, as_json: bool) -> None:
    """Sessions stuck now (longer in their status than STALL_AFTER allows), and for how long."""
    from worker.tracking.nudges import stalled_sessions

    settings = get_settings()
    accounts = get_accounts()
    if account is not None:
        accounts.named(account)
    if not settings.stall_after:
        raise BadInput("set STALL_AFTER (e.g. IDLE=1d,STARTED=2h) to say when a session "
                       "is stalled")
    now = utcnow()
    with database(settings) as db:
        found = stalled_sessions(db=db, stall_after=settings.stall_after, now=now,
                                 accounts=[account] if account else None, limit=limit)
    dealer_names = accounts.dealer_names
    rows = [{"session_key": s.session_key, "account": s.account,
             "dealer_name": dealer_names.get(s.account), "status": s.status,
             "status_since": iso(s.status_since), "stalled_for": round(s.stalled_for),
             "stall_after": s.allowed} for s in found]
    if as_json:
        print_json(rows)
        return
    print_rows([{**row, "stalled_for": spell_duration(s.stalled_for)}
                for row, s in zip(rows, found, strict=True)],
               [("session_key", "SESSION"), ("account", "ACCOUNT"), ("status", "STATUS"),
                ("status_since", "SINCE"), ("stalled_for", "STUCK FOR")])
    click.echo(f"{len(rows)} stalled session(s)")


@cli.command()
@click.argument("key")
@click.option("--target", "target_name", metavar="NAME",
              help="The adf target whose interest and from address to use (default: the "
                   "first one configured).")
def adf(key: str, target_name: str | None) -> None:
    """Print the ADF/XML lead session KEY would produce (to set up a CRM)."""
    from worker.delivery.adf.lead import build_lead
    from worker.delivery.events import event_document
    from worker.delivery.targets import AdfTarget

    key = validate_session_key(key)
    targets = [t for t in get_targets() if isinstance(t, AdfTarget)]
    if target_name is not None:
        targets = [t for t in targets if t.name == target_name]
        if not targets:
            raise BadInput(f"no adf target named {target_name[:40]!r}")
    target = targets[0] if targets else None
    settings = get_settings()
    with database(settings) as db:
        tracked = service.find_session(db=db, session_key=key)
        document = event_document(
            event_type="session.completed", tracked=tracked,
            history=service.session_history(db=db, session_id=tracked.id),
            previous_status=None, occurred_at=utcnow(),
            dealer_name=get_accounts().dealer_names.get(tracked.account))
    lead = build_lead(document, lead_id=f"preview-{key}",
                      interest=target.interest if target else "trade-in",
                      vendor_email=target.sender if target else None, now=utcnow())
    click.echo(lead.decode("utf-8"), nl=False)


@cli.command()
def check() -> None:
    """Is everything this configuration needs reachable? One line each; exit 1 if not."""
    from worker.check import run_checks

    settings = get_settings()
    failed = 0
    for finding in run_checks(settings, get_accounts(), get_targets()):
        mark = "ok  " if finding.ok else "FAIL"
        click.echo(f"{mark}  {finding.what}: {finding.detail}")
        failed += not finding.ok
    if failed:
        click.echo(f"{failed} check(s) failed", err=True)
        sys.exit(1)


@cli.group()
def db() -> None:
    """Database schema."""


@db.command()
def upgrade() -> None:
    """Apply every migration (Procfile's release step)."""
    upgrade_database(get_settings())
    click.echo("database is up to date")


@cli.command()
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Tasks run at once.")
@click.option("--pool", type=click.Choice(["threads", "prefork"]), default="threads",
              show_default=True,
              help="threads: one process, nothing to leave behind; prefork: a process per "
                   "task slot, with hard time limits.")
@click.option("--loglevel", default="info",
              type=click.Choice(["debug", "info", "warning", "error"]))
def run(concurrency: int, pool: str, loglevel: str) -> None:
    """Run the worker and the beat in one process."""
    settings = get_settings()
    # A bad account or target stops here, not at the first poll or event.
    accounts = get_accounts()
    targets = get_targets()
    ensure_schema(settings)
    from worker.celery_app import app

    click.echo(f"{PROG}: {len(accounts)} PAVE account(s): {', '.join(accounts.names)}; "
               f"{len(targets)} callback target(s): "
               f"{', '.join(t.name for t in targets) or 'none'}", err=True)

    # Threads by default: polls wait on the network, not the CPU, and a prefork pool's
    # children that get a group-wide SIGTERM (Ctrl-C, timeout, systemd) can die holding
    # the pool's queue lock and hang the parent's exit (billiard's _help_stuff_finish).
    argv = ["worker", "--beat", f"--loglevel={loglevel.upper()}", f"--pool={pool}",
            f"--concurrency={concurrency}"]
    if settings.uses_embedded_broker:
        # Mingle, gossip and heartbeats need fanout exchanges the SQL transport lacks.
        argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    app.worker_main(argv)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """Serve the HTTP API (and PAVE's push endpoint); /openapi.json describes it."""
    import uvicorn

    from worker.api.app import create_app
    from worker.celery_app import send_poll
    from worker.logs import configure_logging

    settings = get_settings()
    accounts = get_accounts()
    targets = get_targets()
    if not settings.api_tokens and not any(account.api_tokens for account in accounts):
        raise BadInput("set API_TOKENS (comma-separated, 16+ characters each) to serve the API")
    ensure_schema(settings)
    configure_logging(settings, targets, accounts=accounts)

    app = create_app(settings=settings, sessions=session_factory(settings.database_url),
                     enqueue_poll=send_poll, accounts=accounts)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


@cli.group()
def pave() -> None:
    """PAVE's own API."""


@pave.command(name="register-callbacks")
@click.argument("url")
@click.option("--account", metavar="NAME",
              help="The PAVE account to register for; needed when there are several. Its "
                   "push URL is /pave/callbacks/NAME (/pave/callbacks for default).")
def register_callbacks(url: str, account: str | None) -> None:
    """Ask PAVE to push status changes to URL (this tracker's /pave/callbacks)."""
    from worker.pave.callbacks import PUSH_EVENTS, register_push_callbacks

    settings = get_settings()
    if not url.startswith(("https://", "http://")):
        raise BadInput(f"bad URL {url[:80]!r}: expected http(s)://…/pave/callbacks")
    accounts = get_accounts()
    chosen = accounts.named(accounts.choose(account))
    if chosen.push_token is None:
        raise BadInput("set PAVE_PUSH_TOKEN first: PAVE sends it back with every push"
                       if chosen.name == DEFAULT_ACCOUNT else
                       f"give [[account]] {chosen.name!r} a push_token_env first: PAVE "
                       "sends it back with every push")
    for event, how in register_push_callbacks(settings, chosen, url):
        click.echo(f"{event}: {how}")
    click.echo(f"PAVE will push {', '.join(PUSH_EVENTS)} to {url}")


@cli.command()
@click.option("--sessions", "session_count", default=8, show_default=True,
              type=click.IntRange(4, 200), help="How many simulated sessions to track.")
@click.option("--keep-running", is_flag=True,
              help="Keep showing the table until Ctrl-C instead of stopping when all is done.")
def demo(session_count: int, keep_running: bool) -> None:
    """Run everything on this machine with no services and no PAVE account."""
    from worker.demo import run_demo

    sys.exit(run_demo(count=session_count, keep_running=keep_running))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Beyond loopback (127.0.0.0/8, ::1, localhost) only with --api-key and "
                   "--api-secret of your own.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", default="sim-api-key", show_default=True,
              help="Published, like the other defaults: give your own to listen beyond "
                   "loopback. Also guards /_simulator/ when not the default.")
@click.option("--username", default="sim-user", show_default=True)
@click.option("--api-secret", default="sim-api-secret", show_default=True)
@click.option("--api-token", default=None, help="Also accept this static API-Token.")
@click.option("--sessions", "session_count", default=0, type=click.IntRange(0, 100_000),
              help="Script this many sessions SIM-00001… with varied lifecycles, each "
                   "starting at its first poll.")
@click.option("--speed", default=1.0, type=click.FloatRange(min=0.001),
              help="Lifecycle steps take 1/SPEED of their scripted seconds.")
@click.option("--account", "extra_accounts", multiple=True,
              metavar="NAME:API_KEY:USERNAME:API_SECRET",
              help="Another PAVE account (a dealer group's store), repeatable; its sessions "
                   "are scripted with the control API's \"account\" field.")
def simulate(host: str, port: int, api_key: str, username: str, api_secret: str,
             api_token: str | None, session_count: int, speed: float,
             extra_accounts: tuple[str, ...]) -> None:
    """Serve the PAVE simulator (GET /v1/sessions/{key}) for integrators' own tests.

    It listens beyond loopback only with credentials of your own: an --api-key and an
    --api-secret that are neither empty nor the defaults printed here. --api-token alone
    is not enough, since tokens signed with the published secret would still be
    accepted. With a key of your own, the control API (/_simulator/) asks for it in the
    API-Key header too. Callbacks registered with the simulator must point at this
    machine.
    """
    import uvicorn

    from worker.pave.simulator import (
        DEFAULT_API_KEY,
        DEFAULT_API_SECRET,
        LIFECYCLES,
        Simulator,
        is_loopback_host,
        scaled,
    )

    own_credentials = (api_key not in {"", DEFAULT_API_KEY}
                       and api_secret not in {"", DEFAULT_API_SECRET})
    if not is_loopback_host(host) and not own_credentials:
        # Before anything binds: with the published credentials anyone who can reach
        # the port could script sessions and register callbacks.
        raise BadInput(f"--host {host[:80]!r} is beyond loopback: give --api-key and "
                       "--api-secret of your own (not the defaults) to listen there")
    simulator = Simulator(api_key=api_key, username=username, api_secret=api_secret,
                          api_token=api_token)
    for spec in extra_accounts:
        name, key, user, secret = (spec.split(":", 3) + ["", "", ""])[:4]
        try:
            simulator.add_account(name, api_key=key, username=user, api_secret=secret or None)
        except ValueError as exc:
            raise BadInput(f"bad --account {name[:40]!r}: {exc} (NAME:API_KEY:USERNAME:"
                           "API_SECRET)") from None
    names = list(LIFECYCLES)
    # --sessions' upper bound leaves the control API room under Simulator.max_sessions.
    for number in range(1, session_count + 1):
        # Each lifecycle starts at the session's first poll, however late that comes.
        simulator.add_session(f"SIM-{number:05d}",
                              scaled(names[(number - 1) % len(names)], 1 / speed),
                              starts_on_first_request=True)
    control = "" if simulator.control_api_open else " (with your API-Key header)"
    click.echo(f"PAVE simulator on http://{host}:{port}/v1 — script sessions with "
               f"PUT /_simulator/sessions/KEY{control}; see README", err=True)
    try:
        uvicorn.run(simulator.app, host=host, port=port, log_level="warning", lifespan="off")
    finally:
        simulator.close()  # its pusher thread, if PAVE-style callbacks were registered


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: turns every expected failure into one line and an exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name=PROG,
                 standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        fail("aborted", 1)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except BadInput as exc:
        fail(str(exc), 2)
    except PaveTrackerError as exc:
        fail(str(exc), 1)
    except (OperationalError, DBAPIError) as exc:
        fail(f"database error: {first_line(exc.orig) if exc.orig else first_line(exc)}", 1)
    sys.exit(0)


def first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def fail(message: str, status: int) -> None:
    click.echo(f"{PROG}: error: {first_line(message)}", err=True)
    sys.exit(status)

