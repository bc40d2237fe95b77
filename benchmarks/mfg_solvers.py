"""Our finite mean-field game solvers against MFGLib, same game, same algorithm, same iterations.

MFGLib pins rich < 15 and pulls torch, optuna and osqp, so it gets its own virtual environment
(created on first use under ``~/.cache/negotiator/mfglib-venv``, torch==2.13.0 as everywhere
else); it runs in torch float64, the precision ours uses. Both sides run fictitious play and
online mirror descent on the beach bar game from the uniform policy, computing exploitability
after every iteration as MFGLib's ``solve`` does.

Prints ``ours_s_per_iter``, ``mfglib_s_per_iter``, ``speedup`` and ``exploitability_diff`` (the
largest difference of the final exploitability over the algorithms), per algorithm as well.

    python benchmarks/mfg_solvers.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

from market.mfg import beach_bar, fictitious_play, online_mirror_descent

_THEIRS = r"""
import json, sys, time
import torch
from mfglib.alg import FictitiousPlay, OnlineMirrorDescent
from mfglib.env import Environment
torch.set_default_dtype(torch.float64)
horizon, n, iterations = map(int, sys.argv[1:4])
out = {}
for name, alg in (("fictitious_play", FictitiousPlay()), ("omd", OnlineMirrorDescent(alpha=1.0))):
    env = Environment.beach_bar(T=horizon, n=n)
    start = time.perf_counter()
    _, expl, _ = alg.solve(env, max_iter=iterations, atol=None, rtol=None, verbose=False)
    out[name] = {"s": time.perf_counter() - start, "exploitability": expl[-1]}
print(json.dumps(out))
"""


def _mfglib_python() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "negotiator"
    env = cache / "mfglib-venv"
    python = env / "bin" / "python"
    if (
        not python.exists()
        or subprocess.run(
            [str(python), "-c", "import mfglib"], capture_output=True, check=False
        ).returncode
    ):
        print(f"installing MFGLib into {env} (once)", file=sys.stderr)
        venv.create(env, with_pip=True, clear=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "mfglib==0.3.0"],
            check=True,
        )
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--states", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    game = beach_bar(horizon=args.horizon, n=args.states)
    ours = {}
    for name, solver in (
        ("fictitious_play", lambda: fictitious_play(game, args.iterations)),
        ("omd", lambda: online_mirror_descent(game, args.iterations, alpha=1.0)),
    ):
        start = time.perf_counter()
        result = solver()
        ours[name] = {"s": time.perf_counter() - start, "exploitability": result.exploitability[-1]}
    python = _mfglib_python()
    answer = subprocess.run(
        [str(python), "-c", _THEIRS, str(args.horizon), str(args.states), str(args.iterations)],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(answer.stdout)
    per = {}
    for name in ours:
        per[name] = {
            "ours_s_per_iter": ours[name]["s"] / args.iterations,
            "mfglib_s_per_iter": theirs[name]["s"] / args.iterations,
            "speedup": round(theirs[name]["s"] / ours[name]["s"], 2),
            "exploitability": ours[name]["exploitability"],
            "exploitability_diff": abs(
                ours[name]["exploitability"] - theirs[name]["exploitability"]
            ),
        }
    ours_total = sum(v["s"] for v in ours.values())
    theirs_total = sum(v["s"] for v in theirs.values())
    result_json = {
        "game": f"beach_bar(T={args.horizon}, n={args.states})",
        "iterations": args.iterations,
        "ours_s_per_iter": round(ours_total / (2 * args.iterations), 6),
        "mfglib_s_per_iter": round(theirs_total / (2 * args.iterations), 6),
        "speedup": round(theirs_total / ours_total, 2),
        "exploitability_diff": max(v["exploitability_diff"] for v in per.values()),
        "algorithms": per,
    }
    if args.json:
        print(json.dumps(result_json))
    else:
        print(json.dumps(result_json, indent=2))


if __name__ == "__main__":
    main()
