"""Shared fixtures: every async test runs on asyncio and on asyncio + uvloop."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from negotiator import log, threads
from tests.natsserver import nats_server  # noqa: F401  (a fixture for the NATS tests)

_BACKENDS = [pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio")]
if importlib.util.find_spec("uvloop") is not None:
    _BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """The event loops the runtime supports."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """The functions run in worker threads through :func:`negotiator.threads.run_sync` (the GIL
    hand-off) during the test, in order."""
    calls: list[Callable[..., Any]] = []
    run_sync = threads.run_sync

    async def spy(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(threads, "run_sync", spy)
    return calls


@pytest.fixture(scope="session")
def _log_sink() -> Iterator[object]:
    with open(os.devnull, "w") as sink:
        yield sink


@pytest.fixture(autouse=True)
def _quiet_logs(_log_sink: object) -> None:
    """Warnings are produced (tests capture them) but written nowhere; set again before every
    test, since a CLI test configures the logs onto a stream its runner closes afterwards."""
    log.configure("warning", json=True, stream=_log_sink)


@pytest.fixture(scope="session")
def regtest_network() -> Iterator[object]:
    """bitcoind and three Core Lightning nodes started from the binaries on PATH, bootstrapped
    into a line alice = bob = carol of two balanced 5M sat channels per link (alice pays carol
    over two hops; more than one channel carries goes in parts); skips without them."""
    from payments.regtest import LocalRegtest, binaries

    if binaries() is None:
        pytest.skip(
            "regtest: bitcoind, bitcoin-cli and lightningd are not on PATH"
            " (or set $BITCOIND, $BITCOIN_CLI, $LIGHTNINGD)"
        )
    network = LocalRegtest(("alice", "bob", "carol")).start()
    try:
        network.regtest().bootstrap("line", capacity_sat=5_000_000, push_ratio=0.5, channels=2)
        yield network
    finally:
        network.stop()
