"""The chaos run: pave-tracker on PostgreSQL + Redis while everything goes wrong.

Two workers and a beat as separate processes; the simulator failing a share of polls with
every kind of fault (429, 5xx, HTML, half a JSON document, timeouts, 401); a worker
SIGKILLed every few seconds and started again; Redis restarted once and PostgreSQL
restarted once. Then it waits for everything to finish and checks every session against
what the simulator served, and every event against what the receiver got.

    python scripts/chaos.py --sessions 40 --duration 60

Exit status 0 when everything survived. Needs the local PostgreSQL and Redis of this
machine (it restarts them with the commands in the README) and the installed project.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import redis

from worker.demo import DemoReceiver
from worker.pave.simulator import FAULT_KINDS, Simulator, running_simulator, scaled, serving
from worker.processes import stop_process_group

BIN = Path(sys.executable).parent
LIFECYCLES = ["complete", "skips_to_complete", "expired", "invalid", "unknown_status"]
ORDER = {"complete": ["IDLE", "STARTED", "PROCESS", "QC_PASSED", "CONFIRM", "COMPLETE"],
         "skips_to_complete": ["IDLE", "PROCESS", "COMPLETE"],
         "expired": ["IDLE", "EXPIRED"], "invalid": ["IDLE", "STARTED", "PROCESS", "INVALID"],
         "unknown_status": ["IDLE", "PROCESSING", "WAITING CONFIRM", "COMPLETE"]}
TERMINAL_EVENT = {"COMPLETE": "session.completed", "EXPIRED": "session.expired",
                  "INVALID": "session.invalid"}


def restart_redis() -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"],
                   capture_output=True, timeout=30)
    time.sleep(1)
    start_redis()


def start_redis() -> None:
    if subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True,
                      timeout=10).returncode == 0:
        return
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1",
                    "--port", "6379", "--save", "", "--appendonly", "no", "--dir",
                    "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"], check=True)
    for _ in range(50):
        if subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.1)


def postgres_cluster() -> list[str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def restart_postgres() -> None:
    subprocess.run([*postgres_cluster(), "restart", "-m", "fast"], check=True, timeout=120)


def start_postgres() -> None:
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode != 0:
        subprocess.run([*postgres_cluster(), "start"], timeout=120)
    for _ in range(100):
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0:
            return
        time.sleep(0.2)


def fresh_database(name: str) -> str:
    with psycopg.connect("postgresql://postgres@127.0.0.1/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1/{name}"


def tracker(env: dict[str, str], folder: Path, *args: str) -> str:
    done = subprocess.run([str(BIN / "pave-tracker"), *args], env=env, cwd=folder,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"pave-tracker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def start(role: str, env: dict[str, str], folder: Path, number: int) -> subprocess.Popen[bytes]:
    if role == "beat":
        argv = ["-A", "worker.celery_app", "beat", "--loglevel", "INFO"]
    else:
        argv = ["-A", "worker.celery_app", "worker", "--loglevel", "INFO", "--pool",
                "threads", "--concurrency", "4", "--without-mingle", "--without-gossip",
                "-n", f"chaos{number}@%h"]
    log = (folder / f"{role}-{number}.log").open("ab")
    return subprocess.Popen([str(BIN / "celery"), *argv], env=env, cwd=folder, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run(args: argparse.Namespace) -> int:
    folder = Path(args.folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    simulator = Simulator(fault_rate=args.fault_rate, fault_delay=2.0)
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    receiver = DemoReceiver(secret=secret)
    keys = {f"CHAOS-{n:04d}": LIFECYCLES[n % len(LIFECYCLES)] for n in range(args.sessions)}
    survived: dict[str, Any] = {}
    processes: list[subprocess.Popen[bytes]] = []
    kills = 0
    try:
        start_postgres()
        start_redis()
        redis.Redis.from_url(args.redis_url).flushdb()
        with running_simulator(simulator) as pave_url, serving(receiver.app()) as hook_url:
            env = {**os.environ,
                   "DATABASE_URL": fresh_database(args.database),
                   "REDIS_URL": args.redis_url, "PAVE_API_URL": pave_url,
                   "PAVE_API_KEY": simulator.api_key, "PAVE_USERNAME": simulator.username,
                   "PAVE_API_SECRET": simulator.api_secret or "",
                   "POLL_INTERVAL": "0.3", "POLL_INTERVAL_IDLE": "0.5",
                   "DISPATCH_INTERVAL": "0.3", "LEASE_SECONDS": "3", "PAVE_TIMEOUT": "1",
                   "NOT_FOUND_GRACE": "5", "AUTH_PAUSE": "1", "RATE_LIMIT_PAUSE": "1",
                   "ERROR_BACKOFF_CAP": "2", "MAX_UNFINISHED_POLLS": "50",
                   "POLL_BATCH_SIZE": "5",
                   "WEBHOOK_URL": f"{hook_url}/webhooks/pave", "WEBHOOK_SECRET": secret,
                   "WEBHOOK_EVENTS": "session.completed,session.expired,session.invalid",
                   "DELIVERY_RETRY_SCHEDULE": ",".join(["0.5"] * 60),
                   "PAVE_TRACKER_CONFIG": str(folder / "none.toml"), "LOG_FORMAT": "console"}
            (folder / "none.toml").write_text("")
            tracker(env, folder, "db", "upgrade")
            for key, lifecycle in keys.items():
                simulator.add_session(key, scaled(lifecycle, args.speed),
                                      starts_on_first_request=True)
            tracker(env, folder, "track", *keys)
            workers = [start("worker", env, folder, n) for n in (1, 2)]
            processes += [start("beat", env, folder, 0), *workers]

            began = time.monotonic()
            redis_done = postgres_done = False
            while time.monotonic() - began < args.duration:
                time.sleep(args.kill_every)
                victim = rng.randrange(len(workers))
                os.killpg(workers[victim].pid, signal.SIGKILL)
                workers[victim].wait()
                kills += 1
                workers[victim] = start("worker", env, folder, victim + 1)
                processes.append(workers[victim])
                elapsed = time.monotonic() - began
                if not redis_done and elapsed > args.duration / 3:
                    restart_redis()
                    redis_done = True
                if not postgres_done and elapsed > 2 * args.duration / 3:
                    restart_postgres()
                    postgres_done = True
            if not redis_done:
                restart_redis()
            if not postgres_done:
                restart_postgres()
            simulator.fault_rate = 0.0  # let the survivors finish

            deadline = time.monotonic() + args.settle
            rows: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                rows = json.loads(tracker(env, folder, "list", "--json"))
                deliveries = json.loads(tracker(env, folder, "deliveries", "--json"))
                if all(r["tracking"] != "active" for r in rows) and all(
                        d["state"] == "delivered" for d in deliveries):
                    break
                time.sleep(1)
            details = {key: json.loads(tracker(env, folder, "show", key, "--json"))
                       for key in keys}
            survived = check(keys, details, simulator, receiver)
    finally:
        for process in processes:
            stop_process_group(process, timeout=10)
        start_redis()
        start_postgres()
    report(simulator, kills, survived, args, receiver)
    return 0 if survived and all(not problems for problems in survived.values()) else 1


def check(keys: dict[str, str], details: dict[str, Any], simulator: Simulator,
          receiver: DemoReceiver) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {
        "final status as PAVE served it": [], "history in order, no row twice": [],
        "no session left active": [], "every terminal event delivered once": [],
    }
    by_event: Counter[tuple[str, str]] = Counter()
    for event in receiver.events.values():  # the first request of each webhook-id
        by_event[(event["data"]["session_key"], event["type"])] += 1
    for key, lifecycle in keys.items():
        shown = details[key]
        final = ORDER[lifecycle][-1]
        if shown["status"] != final:
            problems["final status as PAVE served it"].append(f"{key}: {shown['status']}")
        seen = [step["to"] for step in shown["history"]]
        positions = [ORDER[lifecycle].index(s) if s in ORDER[lifecycle] else -1 for s in seen]
        if positions != sorted(set(positions)) or -1 in positions or \
                [step["from"] for step in shown["history"]] != [None, *seen[:-1]]:
            problems["history in order, no row twice"].append(f"{key}: {seen}")
        if shown["tracking"] != "done":
            problems["no session left active"].append(f"{key}: {shown['tracking']}")
        if by_event[(key, TERMINAL_EVENT[final])] != 1:
            problems["every terminal event delivered once"].append(
                f"{key}: {by_event[(key, TERMINAL_EVENT[final])]} distinct ids")
    return problems


def report(simulator: Simulator, kills: int, survived: dict[str, list[str]],
           args: argparse.Namespace, receiver: DemoReceiver) -> None:
    faults = simulator.faults
    answered = simulator.answers_served()
    faulted = sum(faults.values())
    print(f"\nchaos run: {args.sessions} sessions, {args.duration:.0f} s of chaos; "
          f"{faulted} of {faulted + answered} session polls "
          f"({faulted / max(1, faulted + answered):.0%}) answered with a fault")
    print("\n| fault injected | count |\n| --- | --- |")
    for kind in FAULT_KINDS:
        print(f"| PAVE {kind} | {faults[kind]} |")
    print(f"| worker SIGKILL | {kills} |\n| Redis restart | 1 |\n| PostgreSQL restart | 1 |")
    print(f"| webhook requests (retries included) | {receiver.arrivals} |")
    print(f"| distinct webhook-ids | {len(receiver.events)} |")
    print("\n| check | result |\n| --- | --- |")
    for name, problems in survived.items():
        print(f"| {name} | {'ok' if not problems else 'FAILED: ' + '; '.join(problems[:5])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos")
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--speed", type=float, default=3.0,
                        help="lifecycle time scale: 3 makes a full lifecycle about 40 s")
    parser.add_argument("--settle", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", default="pave_tracker_chaos")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--folder", default="chaos-run")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
