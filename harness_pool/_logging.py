"""Logging set-up shared by every command: plain text or one JSON object a line.

Structured fields travel in ``extra=`` (``pool_id``, ``runner_worker_id``,
``job_id``) and appear as JSON keys, or as ``key=value`` in text mode.
"""

from __future__ import annotations

import json
import logging
import sys
import time

FIELDS = ("pool_id", "runner_worker_id", "job_id", "job", "step", "cycle_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = " ".join(
            f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None)
        )
        return f"{base} [{extra}]" if extra else base


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Installs (or replaces) harness-pool's stderr handler; other handlers stay
    (so a test framework calling the CLI in-process keeps its log capture)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._harness_pool = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_harness_pool", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # gRPC and Beam are chatty at INFO; keep our own decisions readable.
    for noisy in ("apache_beam", "urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
