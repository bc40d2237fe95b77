"""The same bilateral negotiations through NegMAS's SAO mechanism and through this runtime.

Both sides: one price issue from 80,000 to 280,000 msat/kWh in 101 steps of 2,000 (the seller's
and the buyer's outside options), Boulware time-dependent concession on both sides, a deadline of
10 NegMAS steps = 20 offers (here ``max_rounds=20``), the same number of sessions. NegMAS runs its
synchronous SAOMechanism session after session; the runtime runs them concurrently on its default
(task) engine, including what NegMAS does not do: the protocol checks on both sides, the ledger and
the settlement of every agreement. Offers per second are compared; the two run in turn ``--rounds``
times (3) and each figure is the median over the rounds (``speedup``: the median of each round's
own speedup; the rounds' figures are in ``*_per_round``). Prints figures, asserts nothing.

    python benchmarks/vs_negmas.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from negotiation_throughput import in_rounds, run_runtime

LOW, HIGH, TICK = 80_000, 280_000, 2000
PER_ROUND = ("negmas_offers_per_s", "runtime_offers_per_s", "speedup")


def run_negmas(sessions: int, steps: int) -> tuple[float, float, float]:
    """(offers/s, mean offers per session, agreement rate) over ``sessions`` SAO sessions."""
    from negmas import AspirationNegotiator, SAOMechanism, make_issue
    from negmas.preferences import LinearAdditiveUtilityFunction
    from negmas.preferences.value_fun import AffineFun

    issues = [make_issue([LOW + TICK * i for i in range((HIGH - LOW) // TICK + 1)], "price")]
    span = float(HIGH - LOW)
    offers = agreed = 0
    start = time.perf_counter()
    for _ in range(sessions):
        mechanism = SAOMechanism(issues=issues, n_steps=steps)
        buyer = LinearAdditiveUtilityFunction(
            values=[AffineFun(-1 / span, HIGH / span)], issues=issues
        )
        seller = LinearAdditiveUtilityFunction(
            values=[AffineFun(1 / span, -LOW / span)], issues=issues
        )
        mechanism.add(AspirationNegotiator(name="buyer", aspiration_type="boulware"), ufun=buyer)
        mechanism.add(AspirationNegotiator(name="seller", aspiration_type="boulware"), ufun=seller)
        mechanism.run()
        offers += len(mechanism.extended_trace)  # one entry per offer made
        agreed += mechanism.agreement is not None
    elapsed = time.perf_counter() - start
    return offers / elapsed, offers / sessions, agreed / sessions


def one_round(args: argparse.Namespace) -> dict[str, Any]:
    """NegMAS's sessions, then the runtime's."""
    negmas_offers_per_s, negmas_offers, negmas_rate = run_negmas(args.sessions, args.steps)
    report = run_runtime(
        "task",
        args.agents,
        args.sessions,
        500,
        seed=1,
        strategy_names=["boulware"],
        max_rounds=2 * args.steps,
        tick=TICK,
        tariff=(HIGH, LOW),
    )
    offers = report.offers_per_s * report.negotiation_s
    return {
        "negmas_offers_per_s": round(negmas_offers_per_s, 1),
        "negmas_offers_per_session": round(negmas_offers, 2),
        "negmas_agreement_rate": negmas_rate,
        "runtime_offers_per_s": report.offers_per_s,
        "runtime_offers_per_session": round(offers / max(report.negotiations, 1), 2),
        "runtime_agreement_rate": report.agreement_rate,
        "runtime_settled": report.settled,
        "speedup": round(report.offers_per_s / negmas_offers_per_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=10, help="NegMAS steps (2 offers each)")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="NegMAS and the runtime, in turn, this many times; figures are medians",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    measured = in_rounds(parser, args, one_round, PER_ROUND)
    result = {
        "sessions": args.sessions,
        "deadline_offers": 2 * args.steps,
        "rounds": args.rounds,
        **measured,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
