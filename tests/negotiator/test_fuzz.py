"""The fuzzer: generated inputs through decode and the protocol, crashes kept with their input."""

from __future__ import annotations

from negotiator.fuzz import fuzz
from negotiator.messages import decode


def test_a_short_fuzz_run_reaches_every_outcome_and_crashes_nothing() -> None:
    report = fuzz(20_000, seed=1)
    assert report.messages == 20_000 and report.crashes == []
    assert report.decoded + report.rejected == report.messages
    assert min(report.decoded, report.rejected, report.transitions, report.violations) > 0


def test_a_decoder_that_breaks_is_reported_with_the_input_that_broke_it() -> None:
    def fragile(data: bytes) -> object:
        if len(data) % 7 == 0:
            raise KeyError("boom")
        return decode(data)

    report = fuzz(2_000, seed=2, decoder=fragile)
    assert report.crashes and all(len(data) % 7 == 0 for data, _ in report.crashes)
    assert all("KeyError" in error for _, error in report.crashes)
