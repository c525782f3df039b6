"""What an HTTP answer means for a delivery (webhook and CRM targets alike).

Success is any 2xx within the timeout; a 3xx is a failure (redirects are not followed);
410 Gone ends the delivery; 429 and 503 with `Retry-After` wait at least that long.
"""

from __future__ import annotations

import time

import httpx

from worker.backoff import parse_retry_after
from worker.delivery.attempts import AttemptResult, elapsed_ms

MAX_ERROR_BODY = 200


def post(
    client: httpx.Client, url: str, *, body: bytes, headers: dict[str, str], timeout: float
) -> AttemptResult:
    started = time.perf_counter()
    try:
        response = client.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started),
                             error=f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        # The exception's text, never the URL: a URL may carry a token.
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started),
                             error=f"{type(exc).__name__}: {exc}"[:300])
    return classify(response, elapsed_ms(started))


def classify(response: httpx.Response, duration_ms: float) -> AttemptResult:
    code = response.status_code
    if 200 <= code < 300:
        return AttemptResult(delivered=True, duration_ms=duration_ms, status_code=code)
    snippet = " ".join(response.text[:MAX_ERROR_BODY].split())
    error = f"HTTP {code}" + (f": {snippet}" if snippet else "")
    retry_after = None
    if code in (429, 503):
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return AttemptResult(delivered=False, duration_ms=duration_ms, status_code=code,
                         error=error, retry_after=retry_after, permanent=code == 410)

