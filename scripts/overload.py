"""An operator's bad day, measured: a rotated secret, a throttled account, a backlog.

One `pave-tracker run` on PostgreSQL + Redis against a fake PAVE on loopback that
counts every request it gets:

1. **auth**: PAVE refuses the credentials (401) on every request, with many sessions
   due. How many requests reach PAVE after the first refusal? The goal is at most what
   the worker's threads had in flight: threads x POLL_CONCURRENCY.
2. **throttle**: PAVE answers 429 with `Retry-After: 10` to everything. Requests per
   pause: the same goal, once per pause.
3. **backlog**: PAVE answers every poll in 0.5 s and the worker can do a twentieth of
   what the sessions ask for. For the whole run: does any healthy session leave
   `active`? Is every session polled in turn (the worst gap between two polls of one
   session against the fair period, sessions / polls per second)? Does the broker's
   queue stay bounded?

    python scripts/overload.py                      # all three, about 13 minutes
    python scripts/overload.py --only backlog --backlog-seconds 60

`--code PATH` runs the tracker from another checkout (PYTHONPATH), to measure the code
before a change in the same way. It drops and creates the database `pave_tracker_overload`
and flushes Redis database 10. Prints a table; also writes `overload-run/results.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.config import environment_without_settings
from worker.pave.simulator import serving
from worker.processes import stop_process_group

PARTS = ("auth", "throttle", "backlog")
THREADS = 4  # `pave-tracker run --concurrency`, its default
AUTH_PAUSE = 300  # AUTH_PAUSE's default: longer than the run


class CountingPave:
    """GET /v1/sessions/{key}: every request noted (arrival time, key), then answered the
    way `mode` says: 401, 429 with Retry-After, or the session STARTED after `delay`."""

    def __init__(self, mode: str, *, delay: float = 0.05, retry_after: int = 10) -> None:
        self.mode, self.delay, self.retry_after = mode, delay, retry_after
        self.arrivals: list[tuple[float, str]] = []
        self.first_refusal: float | None = None  # when the first 401/429 was sent
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/sessions/{key}", self.session)])

    async def session(self, request: Request) -> Response:
        key = request.path_params["key"]
        with self.lock:
            self.arrivals.append((time.monotonic(), key))
        await asyncio.sleep(self.delay)
        if self.mode == "ok":
            return JSONResponse({"session_key": key, "status": "STARTED", "active": True})
        with self.lock:
            self.first_refusal = self.first_refusal or time.monotonic()
        if self.mode == "refuse":
            return JSONResponse({"message": "Unauthenticated."}, status_code=401)
        return JSONResponse({"message": "Too Many Attempts."}, status_code=429,
                            headers={"Retry-After": str(self.retry_after)})

    def after_first_refusal(self, *, pause: float) -> int:
        """Requests that arrived after the first refusal was sent, within the pause it
        called for."""
        with self.lock:
            first = self.first_refusal
            if first is None:
                return 0
            return sum(1 for at, _ in self.arrivals if first < at < first + pause)


def fresh_database(name: str) -> str:
    with psycopg.connect("postgresql://postgres@127.0.0.1/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1/{name}"


class Tracker:
    """pave-tracker commands and a `run` process, on this checkout or another's code."""

    def __init__(self, args: argparse.Namespace, folder: Path, pave_url: str,
                 **settings: str) -> None:
        self.folder = folder
        self.env = {**environment_without_settings(),
                    "DATABASE_URL": fresh_database(args.database), "REDIS_URL": args.redis_url,
                    "PAVE_API_URL": pave_url, "PAVE_API_KEY": "key", "PAVE_USERNAME": "user",
                    "PAVE_API_SECRET": "secret", "LOG_FORMAT": "console",
                    "PAVE_TRACKER_CONFIG": str(folder / "none.toml"), **settings}
        if args.code:
            self.env["PYTHONPATH"] = str(Path(args.code).resolve())
        (folder / "none.toml").write_text("")
        redis.Redis.from_url(args.redis_url).flushdb()

    def command(self, *argv: str) -> str:
        done = subprocess.run([sys.executable, "-m", "worker", *argv], env=self.env,
                              cwd=self.folder, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"pave-tracker {argv[0]}: {done.stderr.strip()}")
        return done.stdout

    def track(self, count: int, prefix: str) -> list[str]:
        keys = [f"{prefix}-{n:06d}" for n in range(count)]
        with (self.folder / "keys.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["session_key"])
            writer.writerows([key] for key in keys)
        self.command("db", "upgrade")
        self.command("track", "--file", str(self.folder / "keys.csv"))
        return keys

    @contextmanager
    def running(self, log_name: str, processes: int = 1) -> Iterator[None]:
        """`processes` x `pave-tracker run` (each a worker and a beat)."""
        started = []
        try:
            for number in range(processes):
                log = (self.folder / f"{number}-{log_name}").open("wb")
                started.append(subprocess.Popen(
                    [sys.executable, "-m", "worker", "run", "--concurrency", str(THREADS)],
                    env=self.env, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True))
            yield
        finally:
            for process in started:
                stop_process_group(process)

    def sessions(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.command("list", "--json"))
        return rows


def account_storm(args: argparse.Namespace, folder: Path, mode: str) -> dict[str, Any]:
    """PAVE refuses everything (401) or throttles everything (429 + Retry-After)."""
    sessions = args.auth_sessions if mode == "refuse" else args.throttle_sessions
    seconds = args.auth_seconds if mode == "refuse" else args.throttle_seconds
    pave = CountingPave(mode, retry_after=args.retry_after)
    with serving(pave.app) as url:
        tracker = Tracker(args, folder, f"{url}/v1", POLL_INTERVAL="60",
                          POLL_INTERVAL_IDLE="60", DISPATCH_INTERVAL="1")
        tracker.track(sessions, "STORM")
        log_name = f"run-{mode}.log"
        with tracker.running(log_name):
            time.sleep(seconds)
    log = (folder / f"0-{log_name}").read_text(errors="replace")
    started = pave.arrivals[0][0] if pave.arrivals else 0.0
    pauses = _windows([at - started for at, _ in pave.arrivals], gap=args.retry_after / 2)
    return {
        "sessions due": sessions, "seconds": seconds,
        "requests": len(pave.arrivals),
        "after the first refusal, within its pause": pave.after_first_refusal(
            pause=args.retry_after if mode == "throttle" else AUTH_PAUSE),
        "requests per pause": [count for _, count in pauses],
        "bound per pause": THREADS * args.poll_concurrency,
        "'refused the credentials' log lines": len(re.findall(
            r"PAVE refused the credentials: polling paused", log)),
        "'answered 429' log lines": len(re.findall(r"PAVE answered 429", log)),
    }


def _windows(moments: list[float], *, gap: float) -> list[tuple[float, int]]:
    """Group request times into bursts separated by more than `gap` seconds."""
    windows: list[tuple[float, int]] = []
    for moment in sorted(moments):
        if windows and moment - windows[-1][0] <= gap:
            windows[-1] = (moment, windows[-1][1] + 1)
        else:
            windows.append((moment, 1))
    return windows


def backlog(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Workers twenty times too slow for the load, for `backlog_seconds`."""
    pave = CountingPave("ok", delay=args.latency)
    capacity = args.processes * THREADS * args.backlog_concurrency / args.latency
    with serving(pave.app) as url:
        tracker = Tracker(args, folder, f"{url}/v1", POLL_INTERVAL=str(args.poll_interval),
                          POLL_INTERVAL_IDLE=str(args.poll_interval),
                          LEASE_SECONDS=str(args.lease_seconds), PAVE_TIMEOUT="3",
                          DISPATCH_INTERVAL=str(args.dispatch_interval),
                          POLL_CONCURRENCY=str(args.backlog_concurrency),
                          POLL_BATCH_SIZE=str(args.batch_size))
        keys = tracker.track(args.backlog_sessions, "SLOW")
        broker = redis.Redis.from_url(args.redis_url)
        queue: list[int] = []
        with tracker.running("run-backlog.log", processes=args.processes):
            began = time.monotonic()
            while time.monotonic() - began < args.backlog_seconds:
                queue.append(int(broker.llen("celery")))
                time.sleep(0.5)
            ended = time.monotonic()
        rows = tracker.sessions()
    polls: dict[str, list[float]] = {key: [] for key in keys}
    for at, key in pave.arrivals:
        if at <= ended:
            polls[key].append(at)
    first = min((at for at, _ in pave.arrivals), default=began)
    # From the first poll of all to each session's first, between its polls, and from its
    # last to the end: a session never polled has one gap, the whole run.
    gaps = [later - earlier for times in polls.values()
            for earlier, later in zip([first, *times], [*times, ended], strict=True)]
    rate = len(pave.arrivals) / max(ended - first, 1e-9)
    return {
        "sessions": len(keys), "seconds": args.backlog_seconds,
        "load, polls/s asked for": round(len(keys) / args.poll_interval),
        "worker capacity, polls/s": round(capacity),
        "polls/s done": round(rate, 1),
        "sessions that left active": sum(1 for row in rows if row["tracking"] != "active"),
        "sessions never polled": sum(1 for times in polls.values() if not times),
        "fair period, s (sessions / polls per second)": round(len(keys) / rate, 1),
        "worst gap between two polls of a session, s": round(max(gaps), 1),
        "broker queue, messages: max": max(queue, default=0),
        "broker queue, messages: median": sorted(queue)[len(queue) // 2] if queue else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PARTS))
    parser.add_argument("--code", help="run the tracker from this checkout instead")
    parser.add_argument("--auth-sessions", type=int, default=20_000)
    parser.add_argument("--auth-seconds", type=float, default=45)
    parser.add_argument("--throttle-sessions", type=int, default=3_000)
    parser.add_argument("--throttle-seconds", type=float, default=25)
    parser.add_argument("--retry-after", type=int, default=10)
    parser.add_argument("--backlog-sessions", type=int, default=4_000)
    parser.add_argument("--backlog-seconds", type=float, default=600)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--poll-interval", type=float, default=12.5)
    parser.add_argument("--poll-concurrency", type=int, default=20,
                        help="POLL_CONCURRENCY's default: the auth and throttle bound")
    parser.add_argument("--backlog-concurrency", type=int, default=2,
                        help="POLL_CONCURRENCY in the backlog: with 4 threads and 0.5 s "
                             "answers, 16 polls/s, a twentieth of 4,000 sessions every 12.5 s")
    parser.add_argument("--lease-seconds", type=float, default=60, help="LEASE_SECONDS")
    parser.add_argument("--batch-size", type=int, default=100, help="POLL_BATCH_SIZE")
    parser.add_argument("--processes", type=int, default=1,
                        help="`pave-tracker run` processes in the backlog")
    parser.add_argument("--dispatch-interval", type=float, default=2,
                        help="DISPATCH_INTERVAL")
    parser.add_argument("--database", default="pave_tracker_overload")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--folder", default="overload-run")
    args = parser.parse_args()
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown part {sorted(unknown)[0]!r}; parts are {', '.join(PARTS)}")
    folder = Path(args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}

    def report(part: str, figures: dict[str, Any]) -> None:
        """Each part as it ends, so that a later part's failure loses nothing."""
        results[part] = figures
        (folder / "results.json").write_text(json.dumps(results, indent=2))
        print(f"\n{part}\n\n| measure | value |\n| --- | --- |")
        for measure, value in figures.items():
            print(f"| {measure} | {value} |", flush=True)

    if "auth" in parts:
        report("auth: PAVE refuses the credentials", account_storm(args, folder, "refuse"))
    if "throttle" in parts:
        report(f"throttle: PAVE answers 429, Retry-After {args.retry_after}",
               account_storm(args, folder, "throttle"))
    if "backlog" in parts:
        report("backlog: workers far too slow for the load", backlog(args, folder))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
