"""Logging for ``wshub serve``: readable text or JSON lines, nothing secret, no floods.

- Records may carry fields (``extra={"event": "close", "code": 1001, ...}``): the text format
  appends them as ``key=value``, the JSON format puts them in the object.
- Every line goes through :class:`Scrub` first: ``token=...`` in a query string (uvicorn logs
  the handshake's path) becomes ``token=***``. Message bodies are never logged by wshub.
- uvicorn's own per-WebSocket lines are dropped: wshub logs one line per open and one per close,
  with the session, the close code and the duration.
- Warnings and errors pass a token bucket per message template (:class:`RateLimit`), so that
  an attacker who can trigger a warning cannot flood the log; the next line that passes says
  how many were suppressed.

:func:`log_config` returns a ``logging.config.dictConfig`` dictionary; uvicorn applies it in
every worker process.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any, Final

from wshub.redaction import scrub_tokens

__all__ = ["JsonFormatter", "RateLimit", "Scrub", "TextFormatter", "log_config"]

# Attributes every LogRecord has; anything else was passed as ``extra`` and is a field.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message", "taskName"}
)

# uvicorn's handshake lines, and the websockets library's, which uvicorn logs as its own; a
# refused handshake is logged once by wshub, with its reason.
_UVICORN_WS_LINES: Final = (
    '%s - "WebSocket %s" [accepted]',
    '%s - "WebSocket %s" %d',
    "connection open",
    "connection closed",
    "connection rejected (%d %s)",
    "HTTP response sent (%d %s)",
)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    """``2026-01-02 03:04:05,678 INFO wshub.core.hub: connection closed session=... code=1001``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields_of(record)
        if extra:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        obj.update(fields_of(record))
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class Scrub(logging.Filter):
    """Masks tokens in the formatted message, and drops uvicorn's per-WebSocket lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.error" and record.msg in _UVICORN_WS_LINES:
            return False
        message = record.getMessage()
        scrubbed = scrub_tokens(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


class RateLimit(logging.Filter):
    """A token bucket per message template for warnings and errors: ``burst`` at once, then
    ``rate`` per second. Suppressed lines are counted and reported with the next one."""

    def __init__(self, rate: float = 1.0, burst: float = 10.0, keys: int = 256) -> None:
        super().__init__()
        self.rate = rate
        self.burst = burst
        self.keys = keys
        self.clock = time.monotonic
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now, 0]
            if len(self._buckets) > self.keys:  # many distinct templates: forget the oldest
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            bucket[2] += 1
            return False
        bucket[0] = tokens - 1
        if bucket[2]:
            record.suppressed = int(bucket[2])
            bucket[2] = 0
        return True


def log_config(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    """The logging configuration of a node: one stderr handler for wshub and uvicorn."""
    formatter = "json" if fmt == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"()": "wshub.cli.logs.TextFormatter"},
            "json": {"()": "wshub.cli.logs.JsonFormatter"},
        },
        "filters": {
            "scrub": {"()": "wshub.cli.logs.Scrub"},
            "rate_limit": {"()": "wshub.cli.logs.RateLimit"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
                "filters": ["scrub", "rate_limit"],
            }
        },
        "loggers": {
            "wshub": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
            "uvicorn": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"level": level.upper()},
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
    }
