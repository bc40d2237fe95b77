"""The community's best possible day: a linear programme over every device, solved with HiGHS.

With trading inside the community free, the community is one account facing the grid: in each
slot it imports what its members need net of what they generate, store and shift, or exports the
surplus. The optimum chooses every battery's charge and discharge and every flexible load's
schedule over the whole horizon to minimise

    sum_t (import_t * G+_t - export_t * G-_t) / 1000 + sum_b deg_b (c_bt + d_bt) + D * peak

subject to the balance in every slot (G+ - G- = inflexible net + charge - discharge + flexible),
each battery's state of charge within [0, capacity] with its efficiencies and power limits and
ending the horizon at least as full as it started (or, ``cyclic``, where it started, the start
being free: the periodic steady state of a day that repeats), each flexible load drawing its energy within
its window at its power, and peak >= G+_t (the demand charge D applies to the horizon's highest
import). Payments between members are transfers: they cancel in the community's welfare.

The same programme serves twice: on the realised data with one variable set per device, it is the
benchmark for efficiency; on forecasts with one aggregate device per type, it is the mean-field
planner's day-ahead equilibrium (see :mod:`market.planner`). The balance constraint's duals are
the community's marginal value of energy per slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from market.devices import BatteryFleet, FlexibleFleet


@dataclass(frozen=True)
class Optimum:
    """The optimal schedule and its cost."""

    cost_msat: float
    """Energy from and to the grid at the tariff, degradation and the demand charge."""
    grid_import_wh: np.ndarray
    grid_export_wh: np.ndarray
    battery_wh: np.ndarray
    """Batteries x slots: net flow at the meter (+ charge, - discharge)."""
    flexible_wh: np.ndarray
    """Flexible loads x slots: energy drawn."""
    peak_wh: float
    soc_start_wh: np.ndarray
    """Each battery's state of charge before the first slot (chosen by the programme when
    cyclic)."""
    soc_end_wh: np.ndarray
    """Each battery's state of charge after the last slot."""
    price: np.ndarray
    """Marginal value of energy per slot (msat per kWh): the balance constraint's duals."""


def solve_optimum(
    net_wh: np.ndarray,
    import_price: np.ndarray,
    export_price: np.ndarray,
    batteries: BatteryFleet,
    flexible: FlexibleFleet,
    *,
    demand_charge: float = 0.0,
    method: str = "highs-ds",
    soc_end_wh: np.ndarray | None = None,
    peak_floor: float = 0.0,
    cyclic: bool = False,
    soft_end: tuple[np.ndarray, np.ndarray] | None = None,
    hold_bonus: float = 0.0,
) -> Optimum:
    """Solve the community's day (``net_wh``: inflexible need per slot, summed over members;
    prices in msat per kWh; ``demand_charge`` in msat per Wh-per-slot of the horizon's peak).

    ``soc_end_wh``: the least each battery must hold at the end (default: its initial charge);
    ``peak_floor``: a peak already reached before this horizon (a rolling plan's past);
    ``cyclic``: each battery starts where it ends, at a level the programme chooses (the
    fleet's ``soc0_wh`` and ``soc_end_wh`` are then not used); ``soft_end`` = (shortfall cost,
    surplus value), msat per Wh per battery: the end charge may miss ``soc_end_wh`` (default:
    the initial charge), each Wh short costing the first, each Wh over earning the second (a
    rolling plan's end condition; see :func:`end_settlement`); ``hold_bonus``: msat per Wh per
    slot of charge held, a tie-breaker far below any price that makes a plan store surplus when
    it comes rather than later when it only may (forecasts err)."""
    if cyclic and (soc_end_wh is not None or soft_end is not None):
        raise ValueError("a cyclic day ends where it starts: no end condition applies")
    net = np.asarray(net_wh, np.float64)
    T = net.size
    imp = np.asarray(import_price, np.float64)
    exp = np.asarray(export_price, np.float64)
    if imp.shape != (T,) or exp.shape != (T,):
        raise ValueError("one import and one export price per slot")
    if (exp > imp).any():
        raise ValueError("an export price above the import price makes the programme unbounded")
    B, J = len(batteries), len(flexible)
    # variable layout: G+ (T) | G- (T) | peak (1) | c (B*T) | d (B*T) | s (B*T) | f (J*T)
    #                  | short (B) | over (B), the last two only with a soft end
    g_in, g_out, peak = 0, T, 2 * T
    c0 = 2 * T + 1
    d0 = c0 + B * T
    s0 = d0 + B * T
    f0 = s0 + B * T
    soft = 0 if soft_end is None else B
    n_f = f0 + J * T
    n = n_f + 2 * soft
    cost = np.zeros(n)
    cost[g_in : g_in + T] = imp / 1000
    cost[g_out : g_out + T] = -exp / 1000
    cost[peak] = demand_charge
    deg = np.repeat(batteries.degradation, T)
    cost[c0:d0] = deg
    cost[d0:s0] = deg
    cost[s0:f0] = -hold_bonus

    lower = np.zeros(n)
    upper = np.full(n, np.inf)
    upper[c0:d0] = np.repeat(batteries.power_wh, T)
    upper[d0:s0] = np.repeat(batteries.power_wh, T)
    upper[s0:f0] = np.repeat(batteries.capacity_wh, T)
    last = s0 + np.arange(B) * T + T - 1
    target = batteries.soc0_wh if soc_end_wh is None else np.asarray(soc_end_wh, np.float64)
    if soft_end is not None:
        cost[n_f : n_f + B] = soft_end[0]
        cost[n_f + B : n] = -np.asarray(soft_end[1], np.float64)
    elif not cyclic:
        lower[last] = target
    lower[peak] = peak_floor
    upper[f0:n_f] = np.where(flexible.window(T), flexible.power_wh[:, None], 0.0).ravel()

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []

    def put(r: np.ndarray, c: np.ndarray, v: np.ndarray | float) -> None:
        rows.append(r)
        cols.append(c)
        vals.append(np.broadcast_to(np.asarray(v, np.float64), r.shape))

    # balance, rows 0..T-1: G+ - G- - sum c + sum d - sum f = net
    t = np.arange(T)
    put(t, g_in + t, 1.0)
    put(t, g_out + t, -1.0)
    bt = np.arange(B * T)
    put(bt % T, c0 + bt, -1.0)
    put(bt % T, d0 + bt, 1.0)
    jt = np.arange(J * T)
    put(jt % T, f0 + jt, -1.0)
    # state of charge, rows T..T+B*T-1: s_t - s_{t-1} - eta_c c_t + d_t / eta_d = [t==0] soc0
    # (cyclic: s_{-1} is s_{T-1} and the right-hand side is 0)
    r = T + bt
    put(r, s0 + bt, 1.0)
    later = bt[bt % T > 0]
    put(T + later, s0 + later - 1, -1.0)
    if cyclic:  # T == 1: s_0 - s_0 sums to a zero coefficient, as it should
        first = bt[bt % T == 0]
        put(T + first, s0 + first + T - 1, -1.0)
    put(r, c0 + bt, -np.repeat(batteries.eta_charge, T))
    put(r, d0 + bt, 1.0 / np.repeat(batteries.eta_discharge, T))
    # flexible energy, rows T+B*T..: sum_t f = E
    put(T + B * T + jt // T, f0 + jt, 1.0)
    # soft end, rows T+B*T+J..: s_end + short - over = target
    b = np.arange(soft)
    put(T + B * T + J + b, last[:soft], 1.0)
    put(T + B * T + J + b, n_f + b, 1.0)
    put(T + B * T + J + b, n_f + soft + b, -1.0)
    m_eq = T + B * T + J + soft
    a_eq = sparse.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m_eq, n)
    )
    b_eq = np.concatenate(
        [net, np.zeros(B * T), flexible.energy_wh.astype(np.float64), target[:soft]]
    )
    if not cyclic:
        b_eq[T + np.arange(B) * T] = batteries.soc0_wh
    # peak, inequality rows: G+_t - peak <= 0
    a_ub = sparse.csr_array(
        (
            np.concatenate([np.ones(T), -np.ones(T)]),
            (np.concatenate([t, t]), np.concatenate([g_in + t, np.full(T, peak)])),
        ),
        shape=(T, n),
    )
    result = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.zeros(T),
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=np.stack([lower, upper], axis=1),
        method=method,
    )
    if result.status != 0:
        raise RuntimeError(f"the community programme did not solve: {result.message}")
    x = result.x
    charge = x[c0:d0].reshape(B, T)
    discharge = x[d0:s0].reshape(B, T)
    return Optimum(
        cost_msat=float(result.fun),
        grid_import_wh=x[g_in : g_in + T],
        grid_export_wh=x[g_out : g_out + T],
        battery_wh=charge - discharge,
        flexible_wh=x[f0:n_f].reshape(J, T),
        peak_wh=float(x[peak]),
        soc_start_wh=x[last] if cyclic else batteries.soc0_wh.astype(np.float64),
        soc_end_wh=x[last],
        price=np.asarray(result.eqlin.marginals[:T]) * 1000,
    )


def end_settlement(
    batteries: BatteryFleet, end_wh: np.ndarray, import_price: float, export_price: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What batteries that end the day away from their start owe the next day, valued so that it
    never flatters a run: a Wh short is bought back at ``import_price`` through the charger
    (1 / eta_charge at the meter), a Wh over is sold at ``export_price`` through the discharger
    (eta_discharge at the meter). Returns (shortfall cost, surplus value) per battery in msat
    per Wh (the programme's ``soft_end``) and what each battery owes (negative: is owed)."""
    short = import_price / 1000 / batteries.eta_charge
    over = export_price / 1000 * batteries.eta_discharge
    gap = batteries.soc0_wh - np.asarray(end_wh, np.float64)
    owed = np.where(gap > 0, gap * short, gap * over)
    return short, over, owed
