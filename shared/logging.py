"""Structured logging: one JSON object per line on stderr (or plain text for humans).

Fields passed with ``extra={...}`` become keys of the JSON object. Values whose key
looks like a secret are masked, so a token never reaches a log by accident.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["HIDDEN", "configure_logging", "looks_secret", "secret_variable"]

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRET_WORDS = ("password", "secret", "token", "authorization")
# Environment variable names that hold secrets besides those words: API_KEY, DB_PASS...
_SECRET_VARIABLE = re.compile(r"(^|_)(KEY|PASS|PWD|CREDENTIALS?|AUTH)($|_)", re.IGNORECASE)
HIDDEN = "***"  # what a secret value is shown as


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED:
                entry[key] = "***" if looks_secret(key) else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={'***' if looks_secret(k) else v}"
            for k, v in vars(record).items() if k not in _RESERVED
        )
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        text = f"{text} ({extras})" if extras else text
        if record.exc_info:  # the traceback is what the reader of an error needs most
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text


def looks_secret(key: str) -> bool:
    """Whether a field or variable named ``key`` holds a secret (password, token, ...)."""
    return any(word in key.lower() for word in _SECRET_WORDS)


def secret_variable(name: str) -> bool:
    """Whether the environment variable ``name`` holds a secret by its name (DEPLOY_TOKEN,
    DB_PASSWORD, AWS_SECRET_ACCESS_KEY, API_KEY, ...)."""
    return looks_secret(name) or bool(_SECRET_VARIABLE.search(name))


def configure_logging(level: str = "WARNING", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
