"""Python hooks: `package.module:function`, or an entry point in `pave_tracker.hooks`.

The hook is called with the event document and its delivery id under `"id"`; returning
within the target's `timeout` is success. Raising, or running past the timeout, is a
failure retried on the schedule like any other, under the same id.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from worker.delivery.attempts import AttemptResult, elapsed_ms
from worker.delivery.targets import HOOK_ENTRY_POINT_GROUP, HookTarget
from worker.errors import HookNotFound

Hook = Callable[[dict[str, Any]], object]


def resolve_hook(target: HookTarget) -> Hook:
    if target.callable:
        module_name, _, attribute = target.callable.partition(":")
        if not module_name or not attribute:
            raise HookNotFound(f"callable {target.callable!r} is not 'module:function'")
        try:
            hook = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise HookNotFound(f"cannot load {target.callable!r}: {exc}") from None
    elif target.entry_point:
        found = entry_points(group=HOOK_ENTRY_POINT_GROUP, name=target.entry_point)
        if not found:
            raise HookNotFound(f"no entry point {target.entry_point!r} in "
                               f"{HOOK_ENTRY_POINT_GROUP}")
        hook = next(iter(found)).load()
    else:
        raise HookNotFound("a hook target needs callable or entry_point")
    if not callable(hook):
        raise HookNotFound(f"{target.callable or target.entry_point!r} is not callable")
    return hook  # type: ignore[no-any-return]


def call_hook(target: HookTarget, *, delivery_id: str, body: str) -> AttemptResult:
    started = time.perf_counter()
    event = {"id": delivery_id, **json.loads(body)}
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            resolve_hook(target)(event)
        except BaseException as exc:  # user code: anything it raises is a failed attempt
            outcome.append(exc)
        else:
            outcome.append(None)

    # A Python thread cannot be killed. A hook still running at its timeout is left to
    # finish on this daemon thread, which never keeps the process from exiting; what it
    # does then is not recorded, and the delivery is attempted again (same id) on the
    # schedule. A hook that always hangs costs one idle thread per attempt, and the
    # schedule bounds the attempts.
    thread = threading.Thread(target=run, name=f"hook {target.name} {delivery_id}",
                              daemon=True)
    thread.start()
    thread.join(target.timeout)
    if thread.is_alive():
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started),
                             error=f"hook did not return within {target.timeout:g} s")
    (error,) = outcome
    if isinstance(error, HookNotFound):
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started), error=str(error))
    if error is not None:
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started),
                             error=f"hook raised {type(error).__name__}: {error}"[:300])
    return AttemptResult(delivered=True, duration_ms=elapsed_ms(started))
