"""Action retries: which failures are worth another attempt, and how long to wait.

Layer L1: stdlib only. A failure is transient when the exception, or one of its causes
(`raise ActionError(...) from exc`), says so:
- an explicit `transient` attribute (True or False) decides at once; a plug-in sets it
  on the `ActionError` it raises (`err = ActionError(...); err.transient = True`);
- an HTTP status (`status`/`code` attribute, as the Kubernetes `ApiException` and
  urllib's `HTTPError` carry, or a botocore `response`): 429, any 5xx, and 409 Conflict
  (an update that lost a race; but not 409 AlreadyExists, a create that can never succeed);
- a connection failure or a timeout (`ConnectionError`, `TimeoutError`, and the urllib3 /
  botocore connection errors, recognised by name so that no SDK is imported).
Everything else (a 403, a 404, a failed check, bad parameters) is final. The delay before
attempt n+1 is drawn uniformly in [0, backoff x 2^(n-1)] ("full jitter"), capped.
"""

from __future__ import annotations

import random
from collections.abc import Callable

MAX_DELAY_SECONDS = 60.0
"""No single wait between two attempts is longer than this."""

_TRANSIENT_NAMES = frozenset((
    "MaxRetryError", "NewConnectionError", "ProtocolError", "ReadTimeoutError",
    "ConnectTimeoutError", "EndpointConnectionError", "ConnectionClosedError",
    "ReadTimeout", "ConnectTimeout", "IncompleteRead", "RemoteDisconnected",
))


def is_transient(exc: BaseException | None) -> bool:
    """Whether another attempt may succeed where `exc` failed (see the module doc)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        flag = getattr(exc, "transient", None)
        if isinstance(flag, bool):
            return flag
        status = _status(exc)
        if status is not None:
            return _transient_status(status, exc)
        if isinstance(exc, ConnectionError | TimeoutError) \
                or type(exc).__name__ in _TRANSIENT_NAMES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _status(exc: BaseException) -> int | None:
    """The HTTP status an SDK exception carries, if any."""
    for name in ("status", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        value = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(value, int):
            return value
    return None


def _transient_status(status: int, exc: BaseException) -> bool:
    if status == 409:
        body = getattr(exc, "body", None) or getattr(exc, "reason", None) or ""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return "AlreadyExists" not in text
    return status == 429 or 500 <= status <= 599


def delay(attempt: int, backoff: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): full jitter."""
    ceiling = min(MAX_DELAY_SECONDS, backoff * 2 ** min(attempt - 1, 30))
    return float(rng() * ceiling)
