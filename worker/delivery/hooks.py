"""Python hooks: `package.module:function`, or an entry point in `pave_tracker.hooks`.

The hook is called with the event document and its delivery id under `"id"`; returning
is success, raising is a failure retried on the schedule like any other.
"""

from __future__ import annotations

import importlib
import json
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
    try:
        hook = resolve_hook(target)
    except HookNotFound as exc:
        return AttemptResult(delivered=False, error=str(exc), duration_ms=elapsed_ms(started))
    try:
        hook({"id": delivery_id, **json.loads(body)})
    except Exception as exc:  # the hook is user code: any failure is a failed attempt
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started),
                             error=f"hook raised {type(exc).__name__}: {exc}"[:300])
    return AttemptResult(delivered=True, duration_ms=elapsed_ms(started))

