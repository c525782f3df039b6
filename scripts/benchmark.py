"""The throughput benchmark: pave-tracker on PostgreSQL + Redis against the simulator.

One run prints, as a Markdown table:
1. the loopback ceiling: requests/s a bare aiohttp client gets from the simulator;
2. pave-tracker end to end: polls/s with every session due at once (lease, fetch, parse,
   record, reschedule; every poll a real write), by `pave-tracker run` processes;
3. a naive baseline measured the same way (`bench_naive.py`: one Celery task per
   session, a synchronous client, one UPDATE per poll);
4. the ratios 2/1 and 2/3;
5. one beat tick leasing DUE sessions out of TRACKED (first call and median of the rest);
6. the peak resident memory of a worker process during run 2 (SESSIONS active);
7. detection latency: from the simulator switching a session to COMPLETE to its signed
   webhook arriving, p50 and p99, under the poll interval given.

    python scripts/benchmark.py                       # the README's run: a few minutes
    python scripts/benchmark.py --sessions 300 --naive-sessions 100 --tracked 3000 \\
        --due 300 --latency-sessions 5 --poll-interval 2          # CI's tiny run

Rates are measured from the database: sessions polled / (last poll - first poll). It is a
benchmark, not a test: it prints what it measured and exits 0 whatever the numbers.
It needs this machine's PostgreSQL and Redis and the installed project; the database
named by --database is dropped and created again.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import psycopg
import redis
from chaos import fresh_database, start_postgres, start_redis

from worker.config import environment_without_settings
from worker.demo import DemoReceiver
from worker.pave.auth import PaveCredentials
from worker.pave.simulator import serving
from worker.processes import live_processes_in_group, stop_process_group

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
KEY = "BENCH-{:07d}"  # as bench_simulator.py names its sessions
CREDENTIALS = {"PAVE_API_KEY": "sim-api-key", "PAVE_USERNAME": "sim-user",
               "PAVE_API_SECRET": "sim-api-secret"}
PARTS = ("ceiling", "tracker", "naive", "tick", "latency")
SECRET = "whsec_" + base64.b64encode(b"pave-tracker benchmark secret!!!").decode()


@dataclass
class Row:
    measure: str
    value: str
    target: str = ""
    verdict: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, measure: str, value: str, target: str = "", met: bool | None = None) -> None:
        verdict = "" if met is None else ("met" if met else "missed")
        self.rows.append(Row(measure, value, target, verdict))
        print(f"  {measure}: {value}", flush=True)

    def table(self) -> str:
        lines = ["| measure | value | target | |", "|---|---|---|---|"]
        lines += [f"| {r.measure} | {r.value} | {r.target} | {r.verdict} |"
                  for r in self.rows]
        return "\n".join(lines)


# -- services and processes ------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def simulator_process(sessions: int, folder: Path, latency: float = 0.0) -> Iterator[str]:
    """bench_simulator.py in its own process; yields PAVE_API_URL."""
    port = free_port()
    log = (folder / "simulator.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "bench_simulator.py"), "--port", str(port),
         "--sessions", str(sessions), "--latency", str(latency)],
        stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(lambda: answers(f"{url}/sessions/{KEY.format(0)}"), timeout=300,
                 what="the simulator to start")
        yield url
    finally:
        stop_process_group(process)


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str,
             every: float = 0.2, while_waiting: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: gave up waiting for {what} after {timeout:.0f} s")
        if while_waiting is not None:
            while_waiting()
        time.sleep(every)


def start(argv: list[str], env: dict[str, str], folder: Path, name: str
          ) -> subprocess.Popen[bytes]:
    log = (folder / f"{name}.log").open("ab")
    return subprocess.Popen(argv, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def tracker_env(args: argparse.Namespace, pave_url: str, **extra: str) -> dict[str, str]:
    return {**environment_without_settings(), **CREDENTIALS,
            "DATABASE_URL": args.database_url, "BROKER_URL": args.redis_url,
            "PAVE_API_URL": pave_url, "LOG_LEVEL": "warning", **extra,
            **dict(setting.split("=", 1) for setting in args.set)}


def peak_rss_mb(pids: list[int]) -> float:
    """The largest VmHWM (peak resident set) among these processes, in MB."""
    peak = 0.0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return peak


# -- the database ------------------------------------------------------------------------

def load_sessions(database_url: str, *, total: int, due: int, status: str) -> None:
    """TOTAL active sessions BENCH-…, the first DUE of them due now, the rest in an hour
    or later; written in one statement, as a dealer group's table would look."""
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("TRUNCATE tracked_sessions, events, deliveries, delivery_attempts, "
                   "status_changes, account_pauses RESTART IDENTITY CASCADE")
        db.execute(
            """
            INSERT INTO tracked_sessions (session_key, tracking, status, user_metadata,
                poll_count, next_poll_at, consecutive_errors, unfinished_polls, tracked_at)
            SELECT 'BENCH-' || lpad((n - 1)::text, 7, '0'), 'active', %(status)s, '{}',
                0, CASE WHEN n <= %(due)s THEN now() - (n %% 1000) * interval '1 ms'
                        ELSE now() + interval '1 hour' + (n %% 3600) * interval '1 s' END,
                0, 0, now()
            FROM generate_series(1, %(total)s) AS n
            """, {"status": status, "due": due, "total": total})
        db.execute("VACUUM ANALYZE tracked_sessions")


def polled(database_url: str) -> tuple[int, float]:
    """(sessions polled at least once, seconds from the first poll recorded to the last)."""
    with psycopg.connect(database_url) as db:
        row = db.execute("SELECT count(*), extract(epoch FROM max(last_polled_at) - "
                         "min(last_polled_at)) FROM tracked_sessions "
                         "WHERE poll_count > 0").fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or 0.0)


# -- 1. the loopback ceiling -------------------------------------------------------------

def loopback_ceiling(pave_url: str, requests: int, concurrency: int, sessions: int) -> float:
    """Requests/s of a bare aiohttp client, PAVE's signed headers made per request."""
    credentials = PaveCredentials(api_key=CREDENTIALS["PAVE_API_KEY"],
                                  username=CREDENTIALS["PAVE_USERNAME"],
                                  api_secret=CREDENTIALS["PAVE_API_SECRET"])

    async def run() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as client:
            gate = asyncio.Semaphore(concurrency)

            async def one(number: int) -> None:
                async with gate:
                    headers = credentials.headers(dt.datetime.now(dt.UTC))
                    url = f"{pave_url}/sessions/{KEY.format(number % sessions)}"
                    async with client.get(url, headers=headers) as response:
                        await response.read()
                        if response.status != 200:
                            raise SystemExit(f"the simulator answered {response.status}")

            await asyncio.gather(*(one(n) for n in range(min(requests // 10, 500))))  # warm
            started = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(requests)))
            return requests / (time.perf_counter() - started)

    return asyncio.run(run())


# -- 2. and 6. pave-tracker end to end -----------------------------------------------------

@dataclass
class Throughput:
    polls_per_second: float
    peak_rss_mb: float
    bytes_per_session: float  # tracked_sessions with its indexes, after one poll each


def tracker_throughput(args: argparse.Namespace, pave_url: str, folder: Path) -> Throughput:
    """pave-tracker's `run` (and more worker processes) polling SESSIONS due at once."""
    load_sessions(args.database_url, total=args.sessions, due=args.sessions, status="STARTED")
    redis.Redis.from_url(args.redis_url).flushdb()
    env = tracker_env(args, pave_url, POLL_INTERVAL="3600", POLL_INTERVAL_IDLE="3600",
                      DISPATCH_INTERVAL="0.5", LEASE_SECONDS="120")
    argv = [str(BIN / "pave-tracker"), "run", "--loglevel", "warning",
            "--concurrency", str(args.worker_concurrency)]
    workers = [start(argv, env, folder, "tracker-run")]
    for number in range(1, args.worker_processes):
        workers.append(start([str(BIN / "celery"), "-A", "worker.celery_app", "worker",
                              "--loglevel", "WARNING", "--pool", "threads", "--concurrency",
                              str(args.worker_concurrency), "-n", f"bench{number}@%h"],
                             env, folder, f"tracker-worker-{number}"))
    peak = 0.0

    def sample() -> None:
        nonlocal peak
        peak = max(peak, peak_rss_mb([p for w in workers for p in live_processes_in_group(w.pid)]))

    try:
        wait_for(lambda: polled(args.database_url)[0] >= args.sessions,
                 timeout=args.sessions / 20 + 120, what="pave-tracker to poll every session",
                 every=0.5, while_waiting=sample)
        sample()
    finally:
        for worker in workers:
            stop_process_group(worker)
    count, seconds = polled(args.database_url)
    with psycopg.connect(args.database_url, autocommit=True) as db:
        db.execute("VACUUM tracked_sessions")
        row = db.execute("SELECT pg_total_relation_size('tracked_sessions')").fetchone()
    return Throughput(count / max(seconds, 1e-6), peak, row[0] / count if row else 0.0)


# -- 3. the naive baseline -----------------------------------------------------------------

def naive_throughput(args: argparse.Namespace, pave_url: str, folder: Path) -> float:
    """bench_naive.py's polls/s: a message per session, all queued before it starts."""
    load_sessions(args.database_url, total=args.naive_sessions, due=args.naive_sessions,
                  status="STARTED")
    redis.Redis.from_url(args.redis_url).flushdb()
    env = tracker_env(args, pave_url, PYTHONPATH=str(HERE))
    os.environ.update(BROKER_URL=args.redis_url)
    from bench_naive import POLL_TASK, app

    with app.connection_for_write() as connection, app.producer_or_acquire() as producer:
        for number in range(args.naive_sessions):  # "all due at once": every message waiting
            app.send_task(POLL_TASK, (number + 1, KEY.format(number)), producer=producer,
                          connection=connection)
    worker = start([str(BIN / "celery"), "-A", "bench_naive", "worker", "--loglevel",
                    "WARNING", "--pool", "prefork", "--concurrency", str(os.cpu_count() or 2)],
                   env, folder, "naive-worker")
    try:
        wait_for(lambda: polled(args.database_url)[0] >= args.naive_sessions,
                 timeout=args.naive_sessions / 20 + 120, what="the naive baseline", every=0.5)
    finally:
        stop_process_group(worker)
    count, seconds = polled(args.database_url)
    return count / max(seconds, 1e-6)


# -- 5. one beat tick ----------------------------------------------------------------------

def tick_cost(args: argparse.Namespace, pave_url: str) -> tuple[float, float]:
    """(first, median of the rest) milliseconds for `dispatch_due_polls` leasing DUE of
    TRACKED, sending its poll messages to Redis.

    Each tick reads the broker's queue as a real one does, and finds the workers took
    everything the last tick left there at once (a measured pace that lets it lease all
    of DUE): what is measured is leasing and sending at full size, not backpressure.
    """
    load_sessions(args.database_url, total=args.tracked, due=args.due, status="STARTED")
    os.environ.update(tracker_env(args, pave_url, DISPATCH_MAX=str(args.due)))
    from worker.celery_app import send_poll, waiting_messages
    from worker.config import get_settings
    from worker.db import session_factory, utcnow
    from worker.models import DispatchState
    from worker.tracking.polling import dispatch_due_polls

    settings = get_settings()
    sessions = session_factory(settings.database_url)
    broker = redis.Redis.from_url(args.redis_url)

    timings = []
    for _ in range(args.tick_repeats):
        with psycopg.connect(args.database_url, autocommit=True) as db:
            db.execute("UPDATE tracked_sessions SET next_poll_at = now() - interval '1 s', "
                       "lease_token = NULL, leased_until = NULL WHERE lease_token IS NOT NULL")
            # The reset's dead rows are the benchmark's, not the tick's: cleared, as
            # autovacuum clears a working table's.
            db.execute("VACUUM tracked_sessions")
        with sessions.begin() as db:  # the last tick left DUE waiting, a tick ago
            state = db.get(DispatchState, 1) or DispatchState(id=1)
            state.queue_after_tick = -(-args.due // settings.poll_batch_size)
            state.ticked_at = utcnow() - dt.timedelta(seconds=settings.dispatch_interval)
            db.merge(state)
        broker.flushdb()
        started = time.perf_counter()
        leased = dispatch_due_polls(sessions=sessions, settings=settings,
                                    enqueue=send_poll, waiting=waiting_messages)
        timings.append((time.perf_counter() - started) * 1000)
        if leased != args.due:
            raise SystemExit(f"benchmark: the tick leased {leased}, expected {args.due}")
    broker.flushdb()
    return timings[0], statistics.median(timings[1:] or timings)


# -- 7. detection latency -------------------------------------------------------------------

def detection_latency(args: argparse.Namespace, pave_url: str, folder: Path
                      ) -> list[float]:
    """Seconds from each session's switch to COMPLETE in the simulator to its webhook."""
    load_sessions(args.database_url, total=0, due=0, status="STARTED")
    redis.Redis.from_url(args.redis_url).flushdb()
    interval = args.poll_interval
    rng = random.Random(7)
    switches: dict[str, float] = {}
    for number in range(args.latency_sessions):
        key = f"LATENCY-{number:05d}"
        # Each switches at a random moment a few intervals in: any phase of its polls.
        in_progress = rng.uniform(interval, 3 * interval)
        answer = httpx.put(f"{pave_url.removesuffix('/v1')}/_simulator/sessions/{key}",
                           json={"lifecycle": [["STARTED", in_progress], ["COMPLETE", None]]})
        answer.raise_for_status()
        created = dt.datetime.fromisoformat(answer.json()["created_at"]).timestamp()
        switches[key] = created + in_progress
    (folder / "latency.csv").write_text("session_key\n" + "\n".join(switches) + "\n")

    receiver = DemoReceiver(secret=SECRET)
    with serving(receiver.app()) as receiver_url:
        env = tracker_env(args, pave_url, POLL_INTERVAL=str(interval),
                          POLL_INTERVAL_IDLE=str(interval),
                          WEBHOOK_URL=f"{receiver_url}/webhooks/pave",
                          WEBHOOK_SECRET=SECRET,
                          **({"DISPATCH_INTERVAL": str(args.dispatch_interval)}
                             if args.dispatch_interval else {}))
        subprocess.run([str(BIN / "pave-tracker"), "track", "--file", "latency.csv"],
                       env=env, cwd=folder, check=True, capture_output=True)
        worker = start([str(BIN / "pave-tracker"), "run", "--loglevel", "warning"], env,
                       folder, "latency-run")
        try:
            wait_for(lambda: len(completions(receiver)) >= len(switches),
                     timeout=5 * interval + 120, what="every completion's webhook", every=0.5)
        finally:
            stop_process_group(worker)
    arrived = completions(receiver)
    return sorted(arrived[key] - switches[key] for key in switches)


def completions(receiver: DemoReceiver) -> dict[str, float]:
    """When each session's `session.completed` webhook first arrived."""
    with receiver.lock:
        return {event["data"]["session_key"]: receiver.first_arrived[webhook_id]
                for webhook_id, event in receiver.events.items()
                if event["type"] == "session.completed"}


def bytes_per_finished_session(database_url: str) -> float:
    """Row data a session leaves once done and announced: its row with the vehicle, its
    history, event, delivery and attempts (pg_column_size; indexes and pages not
    counted)."""
    tables = ("tracked_sessions", "status_changes", "events", "deliveries",
              "delivery_attempts")
    with psycopg.connect(database_url) as db:
        total = sum(db.execute(f"SELECT coalesce(sum(pg_column_size(t.*)), 0) "
                               f"FROM {table} AS t").fetchone()[0] for table in tables)
        done = db.execute("SELECT count(*) FROM tracked_sessions "
                          "WHERE tracking = 'done'").fetchone()[0]
    return total / max(done, 1)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# -- the run --------------------------------------------------------------------------------

def versions(database_url: str) -> str:
    with psycopg.connect(database_url) as db:
        row = db.execute("SHOW server_version").fetchone()
    redis_version = redis.Redis(host="127.0.0.1").info()["redis_version"]
    return (f"{os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL "
            f"{row[0] if row else '?'}, Redis {redis_version}")


def run(args: argparse.Namespace) -> None:
    folder = Path(args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    start_postgres()
    start_redis()
    args.database_url = fresh_database(args.database)
    subprocess.run([str(BIN / "pave-tracker"), "db", "upgrade"], check=True,
                   capture_output=True, env=tracker_env(args, "http://127.0.0.1:1/v1"))
    print(f"benchmark on {versions(args.database_url)}", flush=True)
    report = Report()
    runs = set(args.only or PARTS)
    ceiling = ours = naive = None
    simulated = max(args.sessions, args.naive_sessions)
    with simulator_process(simulated, folder, args.pave_latency) as pave_url:
        if "ceiling" in runs:
            ceiling = max(loopback_ceiling(pave_url, args.ceiling_requests, concurrency,
                                           simulated) for concurrency in (10, 50, 100))
            report.add("1. loopback ceiling: bare aiohttp client, best of 10/50/100 at once",
                       f"{ceiling:,.0f} requests/s")
        if "tracker" in runs:
            throughput = tracker_throughput(args, pave_url, folder)
            ours = throughput.polls_per_second
            latency = (f", PAVE answering in {args.pave_latency * 1000:.0f} ms"
                       if args.pave_latency else "")
            report.add(f"2. pave-tracker end to end, {args.sessions:,} sessions due at once, "
                       f"{args.worker_processes} worker process(es){latency}",
                       f"{ours:,.0f} polls/s")
        if "naive" in runs:
            naive = naive_throughput(args, pave_url, folder)
            report.add(f"3. naive baseline, {args.naive_sessions:,} sessions",
                       f"{naive:,.0f} polls/s")
        if ours and ceiling:
            report.add("4. end to end / ceiling", f"{ours / ceiling:.2f}", "≥ 0.5",
                       ours / ceiling >= 0.5)
        if ours and naive:
            report.add("4. end to end / naive", f"{ours / naive:.1f}×", "≥ 10×",
                       ours / naive >= 10)
        if "tick" in runs:
            first, median = tick_cost(args, pave_url)
            report.add(f"5. one beat tick: lease {args.due:,} of {args.tracked:,} and send "
                       "them", f"{median:.0f} ms (first {first:.0f} ms)", "< 250 ms",
                       median < 250)
        if "tracker" in runs:
            peak = throughput.peak_rss_mb
            report.add(f"6. peak RSS of a worker process, {args.sessions:,} sessions active",
                       f"{peak:.0f} MB", "< 200 MB", peak < 200)
            report.add("database: tracked_sessions with its indexes, per session",
                       f"{throughput.bytes_per_session:,.0f} bytes")
        if "latency" in runs:
            latencies = detection_latency(args, pave_url, folder)
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            report.add(f"7. detection latency, COMPLETE → webhook, {len(latencies)} sessions, "
                       f"POLL_INTERVAL {args.poll_interval:g} s",
                       f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(latencies):.2f} s",
                       f"p99 ≤ {args.poll_interval + 1:g} s", p99 <= args.poll_interval + 1)
            report.add("database: row data of a session once done and announced",
                       f"{bytes_per_finished_session(args.database_url):,.0f} bytes")
    print()
    print(report.table())
    (folder / "results.json").write_text(json.dumps([r.__dict__ for r in report.rows],
                                                    indent=2))


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=positive, default=100_000,
                        help="sessions due at once for the end-to-end run (and memory)")
    parser.add_argument("--naive-sessions", type=positive, default=10_000)
    parser.add_argument("--ceiling-requests", type=positive, default=20_000)
    parser.add_argument("--tracked", type=positive, default=1_000_000)
    parser.add_argument("--due", type=positive, default=10_000)
    parser.add_argument("--tick-repeats", type=positive, default=5)
    parser.add_argument("--latency-sessions", type=positive, default=200)
    parser.add_argument("--poll-interval", type=float, default=10.0,
                        help="POLL_INTERVAL of the latency run, seconds")
    parser.add_argument("--dispatch-interval", type=float, default=None,
                        help="DISPATCH_INTERVAL of the latency run (default: the product's)")
    parser.add_argument("--pave-latency", type=float, default=0.0,
                        help="seconds the simulator waits before each answer (loopback: 0)")
    parser.add_argument("--worker-processes", type=positive, default=2,
                        help="one `pave-tracker run`, the rest `celery worker` (threads)")
    parser.add_argument("--worker-concurrency", type=positive, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every pave-tracker process, e.g. POLL_BATCH_SIZE=100")
    parser.add_argument("--only", nargs="+", choices=PARTS,
                        help="run only these parts (the memory figure comes with tracker)")
    parser.add_argument("--database", default="pave_tracker_bench",
                        help="dropped and created again on the local PostgreSQL")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13",
                        help="a Redis database of the benchmark's own: it is flushed")
    parser.add_argument("--folder", default="benchmark-run", help="logs and results.json")
    args = parser.parse_args()
    if args.due > args.tracked:
        parser.error("--due must not exceed --tracked")
    if any("=" not in setting for setting in args.set):
        parser.error("--set takes NAME=VALUE")
    if not 0 <= args.pave_latency <= 10:
        parser.error("--pave-latency must be between 0 and 10 seconds")
    if args.poll_interval <= 0:
        parser.error("--poll-interval must be positive")
    run(args)


if __name__ == "__main__":
    main()
