"""structlog, configured once per process: readable lines on a terminal, JSON lines otherwise.

Context (negotiation id, agent) is bound with ``structlog.contextvars`` where a task works on one
thing; the hot path logs only on trouble.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure(level: str = "warning", json: bool | None = None, stream: Any = None) -> None:
    """Configure structlog (idempotent). ``json=None`` picks JSON unless stderr is a terminal."""
    global _configured
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,  # logging is off the hot path; tests can capture
    )
    _configured = True


def is_configured() -> bool:
    """Whether :func:`configure` has run in this process."""
    return _configured
