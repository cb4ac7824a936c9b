import math

import numpy as np
import pytest
import torch

from trajectory_transformer.ensemble import EnsembleSpec, fit_ensemble, gaussian_log_density
from trajectory_transformer.errors import PipelineError

A = np.array([[0.9, 0.2, 0.0], [-0.1, 0.8, 0.3], [0.0, -0.2, 0.95]])
B = np.array([[0.5, 0.0], [0.0, 1.0], [0.3, -0.4]])
SIGMA = np.array([0.05, 0.1, 0.2])


def linear_inputs(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """States and actions off-centre and on different scales, so standardization has work to do."""
    states = rng.normal([1.0, -2.0, 0.5], [2.0, 0.5, 1.0], (rows, 3))
    actions = rng.uniform(-3.0, 3.0, (rows, 2))
    return states, actions


def test_gaussian_log_density_matches_a_hand_computation():
    # N(1; 0, 1): -log(2 pi)/2 - 1/2;  N(3; 1, 4): -log(2 pi)/2 - log(2) - (2^2 / 4)/2
    density = gaussian_log_density(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.0, math.log(4.0)]))
    expected = [-0.5 * math.log(2 * math.pi) - 0.5, -0.5 * math.log(2 * math.pi) - math.log(2.0) - 0.5]
    assert density.tolist() == pytest.approx(expected, rel=1e-6)


def test_recovers_a_linear_gaussian_system():
    rng = np.random.default_rng(0)
    states, actions = linear_inputs(rng, 4000)
    following = states @ A.T + actions @ B.T + rng.normal(0.0, SIGMA, (4000, 3))
    spec = EnsembleSpec(members=3, hidden=[64, 64], updates=1500)
    model = fit_ensemble(np.hstack([states, actions]), following, spec, seed=0)

    states, actions = linear_inputs(rng, 2000)
    with torch.no_grad():
        mean, log_var = model(torch.as_tensor(np.hstack([states, actions]), dtype=torch.float32).expand(3, -1, -1))
    assert mean.shape == log_var.shape == (3, 2000, 3)
    # Next states spread over about 1 to 2.5 units; predicting their mean would miss by that
    # much. A good fit gets within a fraction of the noise (about 0.015, 0.02, 0.03).
    rmse = np.sqrt(((mean.numpy() - (states @ A.T + actions @ B.T)) ** 2).mean(axis=(0, 1)))
    assert (rmse < 0.05).all(), rmse
    # The noise is homoscedastic, so every member's predicted std should be sigma everywhere
    # (within 3 to 8 % here); a variance left untrained, or not shifted back to raw units, is far off.
    std = torch.exp(log_var / 2).mean(dim=(0, 1)).numpy()
    assert std == pytest.approx(SIGMA, rel=0.2), std


def test_same_seed_same_parameters_and_caller_rng_untouched():
    rng = np.random.default_rng(1)
    inputs, targets = rng.normal(size=(64, 4)), rng.normal(size=(64, 2))
    spec = EnsembleSpec(members=2, hidden=[8], batch_size=16, updates=10)
    before = torch.random.get_rng_state()
    first, again, other = (fit_ensemble(inputs, targets, spec, seed=seed).state_dict() for seed in (0, 0, 1))
    assert torch.equal(before, torch.random.get_rng_state())
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


@pytest.mark.parametrize("inputs, targets, message", [
    (np.zeros((10, 3)), np.zeros((9, 2)), "one target row per input row"),
    (np.zeros((1, 3)), np.zeros((1, 2)), "at least 2 rows"),
    (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), np.zeros((3, 1)), "NaN or infinite.*row 1"),
])
def test_bad_input_is_one_clear_error(inputs, targets, message):
    with pytest.raises(PipelineError, match=message):
        fit_ensemble(inputs, targets, EnsembleSpec(members=2, hidden=[8], updates=1), seed=0)
