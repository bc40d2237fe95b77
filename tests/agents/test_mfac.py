"""Mean-field actor-critic: the drift-modulated step, and learning on the market environment."""

from __future__ import annotations

import numpy as np
import pytest

from agents.env import evaluate, truthful
from agents.mfac import MeanFieldActorCritic, actor_step
from agents.nets import VALIDATION
from agents.observe import OBSERVATION
from market import Scenario


def test_the_actor_step_decays_after_tau0_and_shrinks_while_the_population_drifts() -> None:
    assert actor_step(0.1, 100, 2.0, 1, 0.0) == 0.1
    assert actor_step(0.1, 100, 2.0, 400, 0.0) == pytest.approx(0.025)  # tau0 / t
    assert actor_step(0.1, 100, 2.0, 50, 1.5) == pytest.approx(0.1 / 4)  # 1 + beta W1
    with pytest.raises(ValueError):
        actor_step(0.1, 100, 2.0, 0, 0.0)


def test_a_short_training_run_improves_the_shared_policy_on_held_out_days() -> None:
    scenario = Scenario.load("small").model_copy(update={"agents": 60})
    held_out = [1, 2, 3]
    learner = MeanFieldActorCritic(seed=0, tau0=200, warm_start=False)
    before, _ = evaluate(learner.act, scenario, held_out)
    curve = learner.train(scenario, 25)
    after, _ = evaluate(learner.act, scenario, held_out)
    assert len(curve) == 25
    assert after > 1.3 * before  # the members learn to offer and to cross
    best, _ = evaluate(truthful, scenario, held_out)
    assert after <= best * (1 + 1e-6)  # no policy beats everyone trading everything at reservation
    again = MeanFieldActorCritic(seed=0, tau0=200, warm_start=False)
    again.train(scenario, 2)
    assert again.curve == curve[:2]  # same seed, same training
    actions = learner.act(np.zeros((4, len(OBSERVATION)), np.float32))
    assert actions.shape == (4, 2) and ((actions >= 0) & (actions <= 1)).all()


def test_training_keeps_the_actor_that_did_best_on_the_validation_days() -> None:
    scenario = Scenario.load("small").model_copy(update={"agents": 60})
    learner = MeanFieldActorCritic(seed=0)
    learner.train(scenario, 6, validate_every=2, share=0.5)
    assert [day for day, _ in learner.validation] == [2, 4, 6]
    scores = [score for _, score in learner.validation]
    assert len(set(scores)) > 1  # the actor moved between checks
    kept, _ = evaluate(learner.act, scenario, list(VALIDATION), 0.5)
    assert kept == pytest.approx(max(scores))
