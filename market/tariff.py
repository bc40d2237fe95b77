"""Grid tariffs: every agent's outside option (import price for buyers, export price for sellers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimeOfUseTariff:
    """Time-of-use import price and a flat export (feed-in) price, in msat per kWh.

    Defaults are a typical European retail tariff (about 0.22 / 0.28 / 0.35 EUR per kWh off-peak /
    day / evening peak, 0.08 EUR feed-in) at roughly 1 EUR = 1,000 sat.
    """

    slots_per_day: int = 24
    off_peak: int = 220_000
    """Import price 22:00-07:00."""
    day: int = 280_000
    """Import price 07:00-17:00."""
    peak: int = 350_000
    """Import price 17:00-22:00."""
    export: int = 80_000
    """Feed-in price paid for energy exported to the grid."""

    def __post_init__(self) -> None:
        if self.slots_per_day < 1:
            raise ValueError("slots_per_day must be at least 1")
        if not 0 <= self.export < min(self.off_peak, self.day, self.peak):
            raise ValueError("the export price must be below every import price")

    def hour(self, slot: int) -> float:
        """Hour of day at the start of ``slot``."""
        return (slot % self.slots_per_day) * 24.0 / self.slots_per_day

    def import_price(self, slot: int) -> int:
        """What a buyer pays the grid in ``slot``."""
        h = self.hour(slot)
        if 17 <= h < 22:
            return self.peak
        if 7 <= h < 17:
            return self.day
        return self.off_peak

    def __call__(self, slot: int) -> tuple[int, int]:
        """``(import_price, export_price)`` in ``slot``."""
        return self.import_price(slot), self.export
