"""The benchmark's PAVE: the project's simulator in a process of its own.

    python scripts/bench_simulator.py --port 8801 --sessions 100000

Sessions BENCH-0000000… stay IN_PROGRESS-like (`STARTED`) for ever, so every poll is a
full answer and nothing finishes during a throughput run. The control API adds the
latency run's sessions. uvicorn serves it in one process with httptools and uvloop (it
picks them when installed; the project installs them): a slow PAVE would hide a slow
client.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvicorn

from worker.pave.simulator import Simulator

KEY = "BENCH-{:07d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds each answer waits, as PAVE across the internet would")
    args = parser.parse_args()
    simulator = Simulator()
    for number in range(args.sessions):
        simulator.add_session(KEY.format(number), [("STARTED", None)])
    app = delayed(simulator.app, args.latency) if args.latency > 0 else simulator.app
    try:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning",
                    lifespan="off", access_log=False)
    finally:
        simulator.close()


def delayed(app: Any, seconds: float) -> Any:
    """The ASGI app, answering every request `seconds` late (without holding the loop)."""
    async def late(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(seconds)
        await app(scope, receive, send)
    return late


if __name__ == "__main__":
    main()
