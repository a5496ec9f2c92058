"""The Python client of capserve: `CapserveClient` (sync) and `AsyncCapserveClient` over httpx.

with CapserveClient("http://127.0.0.1:8000", api_key=os.environ["CAPSERVE_API_KEY"]) as c:
    response = c.classify(["the service was great"], ["sentiment"])
    print(response.results[0].results["sentiment"].label)
"""

from client.async_client import AsyncCapserveClient
from client.errors import (
    AuthError,
    BadRequest,
    CapserveError,
    ConnectionFailed,
    RateLimited,
    ServerError,
    TimedOut,
    Unavailable,
)
from client.many import TextOutcome
from client.retry import RetryPolicy
from client.sync_client import CapserveClient

__all__ = [
    "AsyncCapserveClient",
    "AuthError",
    "BadRequest",
    "CapserveClient",
    "CapserveError",
    "ConnectionFailed",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "TextOutcome",
    "TimedOut",
    "Unavailable",
]
