"""The server's log lines: readable text by default, or one JSON object a line, each carrying
the trace id, span id and job id of what it is about.

Ids come from the record when the code that logs names them (``extra={"trace_id": ...}``), else
from the current span (OpenTelemetry's context, set per RPC by the tracing interceptor) and the
current RPC's job (``current_rpc``). Structured values go in ``extra={"fields": {...}}``: JSON
lines carry them as keys, text lines as ``key=value`` after the message.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from scheduler.job import short_id

LOG_FORMATS = ("text", "json")
_IDS = ("trace_id", "span_id", "job_id")


@dataclass
class RpcLogContext:
    """What the log lines of one RPC share: the job it submitted or watches, once known."""

    method: str
    job_id: str = ""


current_rpc: contextvars.ContextVar[RpcLogContext | None] = contextvars.ContextVar(
    "pointillist_current_rpc", default=None
)


class ContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` and ``job_id`` to every record that lacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "trace_id", ""):
            span_context = trace.get_current_span().get_span_context()
            if span_context.is_valid:
                record.trace_id = format(span_context.trace_id, "032x")
                record.span_id = format(span_context.span_id, "016x")
        if not getattr(record, "job_id", ""):
            rpc = current_rpc.get()
            record.job_id = rpc.job_id if rpc is not None else ""
        # A prefix finds the job; the whole id grants it (watch, cancel) when keys are off.
        record.job_id = short_id(str(getattr(record, "job_id", "")))
        for name in _IDS:
            if not hasattr(record, name):
                setattr(record, name, "")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the ids, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _IDS:
            if value := getattr(record, name, ""):
                line[name] = value
        line.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` with the ids last, when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [f"{key}={value}" for key, value in (getattr(record, "fields", {}) or {}).items()]
        extras += [f"{name}={value}" for name in _IDS if (value := getattr(record, name, ""))]
        if not extras:
            return text
        head, newline, tail = text.partition("\n")  # keep a traceback below the line
        return f"{head} {' '.join(extras)}{newline}{tail}"


def configure(level: str = "INFO", log_format: str = "text") -> None:
    """Log to stderr at ``level`` in ``log_format`` ("text" or "json"); raises ValueError for
    another format. Replaces handlers set before, so calling it twice is harmless."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    with contextlib.suppress(ValueError):
        root.setLevel(level.upper())
