"""Dealer groups: should one poll batch mix accounts? Measured, both ways.

A tick cuts the due sessions into batches in due order, accounts mixed
(`worker.tracking.polling.batches_of`); a batch asks its accounts side by side, each
with its own client, gate and rate limit. The alternative is a batch per account. This
runs the real dispatch and poll functions on PostgreSQL, ticks with a few due sessions
per account (the case where the two differ most), and models PAVE's time: each answer
takes `--latency` seconds, POLL_CONCURRENCY at a time per account, accounts at once.

    python scripts/accounts_batching.py                 # 30 accounts, 3 due each per tick
    python scripts/accounts_batching.py --accounts 30 --due-per-account 40

Prints, per way: poll messages per tick, database time per poll (lease, claim, record)
and the slowest batch's PAVE time. Drops and creates the database
`pave_tracker_accounts_bench`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import time
from collections.abc import Mapping, Sequence

import psycopg
from sqlalchemy import insert

from worker.config import Settings
from worker.db import session_factory
from worker.models import TrackedSession, Tracking
from worker.pave.fetching import Outcome
from worker.pave.payload import SessionSnapshot
from worker.schema import upgrade_database
from worker.tracking import polling

DATABASE = "pave_tracker_accounts_bench"


def fresh_database() -> str:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres",
                         autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"


def batches_by_account(leased: Sequence[tuple[int, str]], *, size: int) -> list[list[int]]:
    """The alternative: each account's due sessions in batches of their own."""
    by_account: dict[str, list[int]] = {}
    for row_id, account in leased:
        by_account.setdefault(account, []).append(row_id)
    return [ids[start:start + size] for ids in by_account.values()
            for start in range(0, len(ids), size)]


def measure(way: str, *, accounts: int, due: int, ticks: int, latency: float,
            concurrency: int) -> dict[str, float]:
    url = fresh_database()
    settings = Settings(_env_file=None, database_url=url, poll_batch_size=100,  # type: ignore[call-arg]
                        poll_concurrency=concurrency, poll_interval=3600,
                        poll_interval_idle=3600, dispatch_interval=5, lease_seconds=60)
    upgrade_database(settings)
    sessions = session_factory(url)
    start = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    per_account = due * ticks
    with sessions.begin() as db:
        db.execute(insert(TrackedSession), [
            {"session_key": f"A{account:02d}-{number:05d}", "account": f"store-{account:02d}",
             "tracking": Tracking.ACTIVE, "user_metadata": {}, "poll_count": 0,
             "consecutive_errors": 0, "tracked_at": start,
             # `due` of each account fall due at each tick.
             "next_poll_at": start + dt.timedelta(seconds=5 * (number // due))}
            for account in range(accounts) for number in range(per_account)])
    polling.batches_of = batches_by_account if way == "by account" else MIXED  # type: ignore[assignment]
    pave_seconds: list[float] = []

    def fetch(keys_by_account: Mapping[str, Sequence[str]]) -> Mapping[str, Outcome]:
        # Each account's keys POLL_CONCURRENCY at a time, accounts side by side.
        pave_seconds.append(max(latency * math.ceil(len(keys) / concurrency)
                                for keys in keys_by_account.values()))
        return {key: SessionSnapshot(session_key=key, status="IDLE")
                for keys in keys_by_account.values() for key in keys}

    messages: list[int] = []
    database_seconds = 0.0
    batch_pave: list[float] = []
    for tick in range(ticks):
        now = start + dt.timedelta(seconds=5 * tick)
        sent: list[tuple[list[int], str]] = []
        began = time.perf_counter()
        polling.dispatch_due_polls(
            sessions=sessions, settings=settings, clock=lambda now=now: now,
            enqueue=lambda ids, token, sent=sent: sent.append((ids, token)))
        for ids, token in sent:
            before = len(pave_seconds)
            polling.poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions,
                                         settings=settings, fetch=fetch,
                                         clock=lambda now=now: now)
            batch_pave.append(sum(pave_seconds[before:]))
        database_seconds += time.perf_counter() - began
        messages.append(len(sent))
    polling.batches_of = MIXED  # type: ignore[assignment]
    polls = accounts * due * ticks
    return {"messages per tick": statistics.mean(messages),
            "db ms per poll": 1000 * database_seconds / polls,
            "slowest batch's PAVE s": max(batch_pave)}


MIXED = polling.batches_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=30)
    parser.add_argument("--due-per-account", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.accounts} accounts, {args.due_per_account} due per account per tick, "
          f"{args.ticks} ticks, PAVE answers in {args.latency} s")
    for way in ("mixed", "by account"):
        result = measure(way, accounts=args.accounts,
                         due=args.due_per_account, ticks=args.ticks, latency=args.latency,
                         concurrency=args.concurrency)
        print(f"{way:>10}: " + ", ".join(f"{name} {value:.2f}" for name, value in result.items()))


if __name__ == "__main__":
    main()
