"""Load and PV shapes from the field's own libraries, with nothing downloaded at run time.

- Load: the BDEW standard load profiles from demandlib (``h0`` households, ``g0`` commerce) at
  their native 15 minutes, holidays and weekdays included, normalised so a year sums to 1: scale
  by an annual consumption to get Wh per slot.
- PV: pvlib on the typical meteorological year that pvlib ships (TMY3, Greensboro NC, hourly):
  solar position, plane-of-array irradiance (Hay-Davies), Faiman cell temperature and PVWatts
  DC and inverter models, for a few roof orientations; Wh per slot per kWp.

Both are computed once per process (a year takes ~0.8 s) and cut to the days and the slot length
asked for. Load profiles are German and the weather American: shapes, not a calibrated site.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

AZIMUTHS = (120.0, 150.0, 180.0, 210.0, 240.0)
"""Roof orientations (degrees from north) the PV shapes are computed for."""
TILT = 30.0
NATIVE_SLOTS = 96  # demandlib's 15 minutes


def load_shape(
    profile: str, year: int, first_day: int, days: int, slots_per_day: int
) -> np.ndarray:
    """Fraction of the annual consumption per slot over ``days`` days from day ``first_day``
    (0-based day of the year), for BDEW profile ``h0`` or ``g0``."""
    year_shape = _bdew_year(year)
    if profile not in year_shape:
        raise ValueError(f"unknown load profile {profile!r}: choose from {sorted(year_shape)}")
    return _cut(year_shape[profile], NATIVE_SLOTS, first_day, days, slots_per_day)


def pv_shape(orientation: int, first_day: int, days: int, slots_per_day: int) -> np.ndarray:
    """Wh per kWp per slot for roof ``orientation`` (an index into :data:`AZIMUTHS`)."""
    hourly = _pv_year()[orientation]  # W per kWp, mean over each hour
    return _cut(hourly, 24, first_day % 365, days, slots_per_day)


def _cut(series: np.ndarray, native: int, first_day: int, days: int, per_day: int) -> np.ndarray:
    """Energy per slot at ``per_day`` slots a day from a series at ``native`` slots a day
    (energy is conserved: finer slots split a native one evenly, coarser ones sum)."""
    if per_day < 1 or (per_day % native and native % per_day):
        raise ValueError(f"{per_day} slots a day do not divide or multiply {native}")
    index = (np.arange(first_day * native, (first_day + days) * native)) % series.size
    part = series[index]
    if per_day >= native:
        return np.repeat(part / (per_day // native), per_day // native)
    return part.reshape(-1, native // per_day).sum(axis=1)  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=4)
def _bdew_year(year: int) -> dict[str, np.ndarray]:
    from demandlib import bdew

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecations inside demandlib
        frame = bdew.ElecSlp(year).get_scaled_profiles({"h0": 1.0, "g0": 1.0})
    return {name: frame[name].to_numpy(np.float64) for name in ("h0", "g0")}


@functools.lru_cache(maxsize=1)
def _pv_year() -> np.ndarray:
    """Hourly AC output in W per kWp for each of :data:`AZIMUTHS`, over the TMY year."""
    import pandas as pd
    import pvlib

    path = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"
    data, meta = pvlib.iotools.read_tmy3(path, map_variables=True, coerce_year=2025)
    site = pvlib.location.Location(meta["latitude"], meta["longitude"], altitude=meta["altitude"])
    times = data.index - pd.Timedelta("30min")  # TMY rows end the hour: the sun at mid-hour
    sun = site.get_solarposition(times)
    extra = pvlib.irradiance.get_extra_radiation(times).to_numpy()
    out = []
    for azimuth in AZIMUTHS:
        poa = pvlib.irradiance.get_total_irradiance(
            TILT,
            azimuth,
            sun["apparent_zenith"].to_numpy(),
            sun["azimuth"].to_numpy(),
            data["dni"].to_numpy(),
            data["ghi"].to_numpy(),
            data["dhi"].to_numpy(),
            dni_extra=extra,
            model="haydavies",
        )
        cell = pvlib.temperature.faiman(
            poa["poa_global"], data["temp_air"].to_numpy(), data["wind_speed"].to_numpy()
        )
        dc = pvlib.pvsystem.pvwatts_dc(poa["poa_global"], cell, pdc0=1000.0, gamma_pdc=-0.004)
        ac = pvlib.inverter.pvwatts(dc, pdc0=1000.0 / 0.96)
        out.append(np.clip(np.nan_to_num(np.asarray(ac, np.float64)), 0.0, None))
    return np.stack(out)
