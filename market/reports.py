"""``negotiator solve ...``: solve a mean-field model, print the solution, plot it to a PNG.

Kept beside the solvers (the CLI only parses options): :func:`lq_report` for the typed LQ
mean-field-type game, :func:`mfg_report` for the finite games and the meeting game.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from market import lq, meeting, mfg

GAMES = ("beach-bar", "meeting")
ALGORITHMS = ("fictitious-play", "omd", "fixed-point")


def random_types(count: int, seed: int) -> list[lq.LQType]:
    """``count`` types with parameters drawn uniformly from documented ranges (demo input)."""
    rng = np.random.default_rng(seed)
    return [
        lq.LQType(
            weight=float(rng.uniform(0.5, 1.5)),
            a=float(rng.uniform(-0.5, 0.5)),
            b=float(rng.uniform(0.5, 1.5)),
            kappa=float(rng.uniform(-0.5, 0.5)),
            sigma=float(rng.uniform(0.1, 0.5)),
            q=float(rng.uniform(0.5, 2.0)),
            r=float(rng.uniform(0.5, 2.0)),
            s=float(rng.uniform(-0.5, 0.5)),
            q_T=float(rng.uniform(0.0, 1.0)),
            x0=float(rng.uniform(-1.0, 2.0)),
        )
        for _ in range(count)
    ]


def lq_report(
    types: int, seed: int, steps: int, horizon: float, plot: Path | None
) -> dict[str, Any]:
    """Solve the typed LQ-MFTG; the JSON-ready solution, and a plot of the mean paths."""
    kinds = random_types(types, seed)
    solution = lq.solve(kinds, horizon=horizon, steps=steps)
    out: dict[str, Any] = {
        "types": types,
        "steps": steps,
        "iterations": solution.iterations,
        "residual": solution.residual,
        "mean_field_T": float(solution.mean_field[-1]),
        "per_type": [
            {
                "weight": k.weight,
                "P0": float(solution.P[0, i]),
                "xi0": float(solution.xi[0, i]),
                "m_T": float(solution.mean[-1, i]),
                "value_at_x0": solution.value(k.x0, i),
            }
            for i, k in enumerate(kinds)
        ],
    }
    if plot is not None:
        fig, (left, right) = _figure(2)
        for i in range(types):
            left.plot(solution.t, solution.mean[:, i], lw=1, label=f"type {i}")
            right.plot(solution.t, solution.P[:, i], lw=1)
        left.plot(solution.t, solution.mean_field, "k", lw=2.5, label="population mean")
        left.set(title="Mean state per type", xlabel="t", ylabel="m(t)")
        right.set(title="Riccati P(t) per type", xlabel="t", ylabel="P(t)")
        left.legend(fontsize=7, ncol=2)
        _save(fig, plot)
        out["plot"] = str(plot)
    return out


def mfg_report(
    game: str, algorithm: str, iterations: int, horizon: int, states: int, plot: Path | None
) -> dict[str, Any]:
    """Solve a finite game (or the meeting game); the JSON-ready result and a plot."""
    if game == "meeting":
        m = meeting.Meeting()
        eq = meeting.equilibrium(m)
        iterated = meeting.iterate(m)
        out: dict[str, Any] = {
            "game": "meeting",
            "tau": eq.tau,
            "start": eq.start,
            "best_response_iterations": iterated.iterations,
        }
        if plot is not None:
            from scipy.stats import norm

            fig, (ax,) = _figure(1)
            x = np.linspace(eq.tau - 4 * m.sigma, eq.tau + 4 * m.sigma, 400)
            ax.plot(x, norm.pdf(x, eq.tau, m.sigma), label="arrivals")
            ax.axvline(m.scheduled, color="grey", ls="--", label="scheduled t")
            ax.axvline(eq.start, color="red", label=f"start T* = {eq.start:.3f}")
            ax.set(title="When does the meeting start?", xlabel="time", ylabel="density")
            ax.legend()
            _save(fig, plot)
            out["plot"] = str(plot)
        return out
    if game != "beach-bar":
        raise ValueError(f"unknown game {game!r}: choose one of {', '.join(GAMES)}")
    finite = mfg.beach_bar(horizon=horizon, n=states)
    solvers = {
        "fictitious-play": lambda: mfg.fictitious_play(finite, iterations),
        "omd": lambda: mfg.online_mirror_descent(finite, iterations),
        "fixed-point": lambda: mfg.fixed_point(finite, iterations),
    }
    if algorithm not in solvers:
        raise ValueError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    result = solvers[algorithm]()
    density = result.mean_field.sum(axis=-1)
    out = {
        "game": finite.name,
        "algorithm": algorithm,
        "iterations": iterations,
        "exploitability": result.exploitability[-1],
        "exploitability_first": result.exploitability[0],
        "final_distribution": [round(float(v), 6) for v in density[-1]],
    }
    if plot is not None:
        fig, (left, right) = _figure(2)
        left.semilogy(np.arange(1, iterations + 1), result.exploitability)
        left.set(title=f"Exploitability ({algorithm})", xlabel="iteration")
        image = right.imshow(density.T, aspect="auto", origin="lower", cmap="viridis")
        right.set(title="Population over time", xlabel="t", ylabel="state")
        fig.colorbar(image, ax=right)
        _save(fig, plot)
        out["plot"] = str(plot)
    return out


def _figure(panels: int) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    return fig, list(axes[0])


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
