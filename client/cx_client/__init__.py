"""An async, typed client of the compute exchange's API, with a self-resynchronising stream."""

from cx_client.client import ExchangeClient
from cx_client.errors import (
    ExchangeError,
    Forbidden,
    NotFound,
    ProblemError,
    RateLimited,
    Unauthorized,
)
from cx_client.stream import LocalBook, MarketStream, StreamMessage

__all__ = [
    "ExchangeClient",
    "ExchangeError",
    "Forbidden",
    "LocalBook",
    "MarketStream",
    "NotFound",
    "ProblemError",
    "RateLimited",
    "StreamMessage",
    "Unauthorized",
]
