"""Shared fixtures: every async test runs on asyncio and on asyncio + uvloop."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from negotiator import log

_BACKENDS = [pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio")]
if importlib.util.find_spec("uvloop") is not None:
    _BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """The event loops the runtime supports."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> Iterator[None]:
    """Warnings are produced (tests capture them) but written nowhere."""
    with open(os.devnull, "w") as sink:
        log.configure("warning", json=True, stream=sink)
        yield
