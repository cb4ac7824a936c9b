"""Model analysis (paper section 4.1): likelihoods by hand, the oracle of Appendix B, the
Markovian ablation's reach, and the rollout sampler against its uncached oracle."""

import math

import numpy as np
import pytest
import torch

from trajectory_transformer.analysis import (
    FeedForwardModel, bin_log_density, feed_forward_log_density, held_out_paths, oracle_log_density,
    transformer_marginals,
)
from trajectory_transformer.discretization import DiscretizeSpec, Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.model import ModelConfig, TrajectoryTransformer
from trajectory_transformer.planner import make_decoder
from trajectory_transformer.training import AblationSpec


def test_bin_log_density_equals_a_hand_computation():
    # two dims; dim 0 bins [0,1) [1,2) [2,4) [4,8], dim 1 bins [0,1) [1,2) [2,3) [3,10]
    edges = np.array([[0.0, 1.0, 2.0, 4.0, 8.0], [0.0, 1.0, 2.0, 3.0, 10.0]])
    bins = Discretizer("uniform", "midpoint", edges, np.zeros((2, 4)), observation_dim=2, action_dim=0, categorical=np.zeros(2, bool))
    marginals = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.125, 0.125]])
    value, outside = bin_log_density(marginals, np.array([3.0, 0.5]), bins)
    assert value == pytest.approx(math.log(0.3 / 2.0) + math.log(0.5 / 1.0))
    assert not outside.any()
    # beyond the outer edge: scored in the outer bin, and flagged
    value, outside = bin_log_density(marginals, np.array([9.0, 12.0]), bins)
    assert value == pytest.approx(math.log(0.4 / 4.0) + math.log(0.125 / 7.0))
    assert outside.tolist() == [True, True]
    # a probability of exactly zero is floored, so one confident miss does not make the curve -inf
    value, _ = bin_log_density(np.array([[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]), np.array([0.5, 0.5]), bins)
    assert np.isfinite(value) and value < -80


def test_the_discrete_oracle_is_appendix_b_for_uniform_bins():
    N, M, V = 3, 1, 20
    data = np.random.default_rng(0).normal(size=(1000, N + M + 2)) * [1.0, 5.0, 0.1, 1.0, 1.0, 1.0]
    discretizer = Discretizer.fit(data, "uniform", DiscretizeSpec(n_bins=V), N, M)
    low, high = data[:, :N].min(axis=0), data[:, :N].max(axis=0)
    appendix_b = np.sum(np.log(V / (high - low)))  # sum_i log(V / (r_i - l_i))
    assert np.allclose(oracle_log_density(data[:50, :N], discretizer), appendix_b)
    # quantile bins: the oracle is the true bin's width, so it varies with the state
    quantile = Discretizer.fit(data, "quantile", DiscretizeSpec(n_bins=V), N, M)
    assert np.ptp(oracle_log_density(data[:50, :N], quantile)) > 0.1


def tiny_model(window=4):
    torch.manual_seed(0)
    config = ModelConfig(observation_dim=3, action_dim=2, n_bins=8, window=window, n_layer=2, n_head=2, n_embd=16,
                         dropout=0.0, position_embedding="rotary")
    return TrajectoryTransformer(config).eval()


def logits_along(model, window: int, tokens: torch.Tensor, crop: bool) -> torch.Tensor:
    """Feed a transition-aligned (E, T) sequence after its first observation through the decoder
    the analysis uses (`crop` or sliding); the next-token logits before each token."""
    N = model.config.observation_dim
    decoder = make_decoder(model, window, tokens[:, :N], cached=True, crop=crop)
    out = []
    for position in range(N, tokens.shape[1]):
        out.append(decoder.logits().reshape(tokens.shape[0], -1))
        decoder.append(tokens[:, position].reshape(-1, 1, 1))
    return torch.stack(out, dim=1)  # row i predicts token N + i


@pytest.mark.parametrize("window, blind", [(2, True), (4, False)])
def test_the_markovian_variant_sees_one_transition(window, blind):
    """Rolled out as the analysis does, a model of window 2 never sees further back than the
    transition before the one it predicts, at any depth: changing transition 0 changes no logit
    predicting transition 2 or later. A sliding window of 4 does see it."""
    model = tiny_model(window)
    D, N = model.config.transition_dim, model.config.observation_dim
    sequence = torch.randint(0, 8, (1, 5 * D), generator=torch.Generator().manual_seed(1))
    changed = sequence.clone()
    changed[0, : D - 1] = (changed[0, : D - 1] + 3) % 8  # every input token of transition 0 (the value is never seen)
    with torch.no_grad():
        before, after = logits_along(model, window, sequence, blind), logits_along(model, window, changed, blind)
    transition_two_on = slice(2 * D - N, None)
    assert not torch.allclose(before[:, : D], after[:, : D])  # transition 1 is predicted from transition 0
    assert torch.allclose(before[:, transition_two_on], after[:, transition_two_on], atol=1e-6) == blind
    if blind:  # the crop: a fresh forward pass over transition 2 alone gives transition 3's first logits
        with torch.no_grad():
            fresh = model(sequence[:, 2 * D : 3 * D])[:, -1]
        assert torch.allclose(before[:, 3 * D - N], fresh, atol=1e-5)


@pytest.mark.parametrize("window, crop", [(2, True), (3, False)])
def test_cached_rollouts_equal_the_uncached_oracle(window, crop):
    """The same marginals (within 1e-4) and the same sampled futures, past the window's slide,
    for both window policies."""
    model = tiny_model(window)
    first = torch.randint(0, 8, (2, 3), generator=torch.Generator().manual_seed(2))
    cached = transformer_marginals(model, first, 5, 6, torch.Generator().manual_seed(0), crop, cached=True)
    full = transformer_marginals(model, first, 5, 6, torch.Generator().manual_seed(0), crop, cached=False)
    assert torch.allclose(cached[0], full[0], atol=1e-4)
    assert torch.equal(cached[1], full[1])
    assert cached[0].shape == (2, 6, 3, 8)
    assert torch.allclose(cached[0].sum(-1), torch.ones(2, 6, 3))


def test_the_first_marginal_equals_the_enumerated_mixture():
    """p(s1[0]) = sum over action and reward tokens of p(a | s0) p(r | s0, a) p(s1[0] | s0, a, r):
    enumerated exactly on a model with one action dim and 4 bins; 20000 rollouts estimate it."""
    torch.manual_seed(0)
    V = 4
    config = ModelConfig(observation_dim=2, action_dim=1, n_bins=V, window=3, n_layer=1, n_head=2, n_embd=16,
                         dropout=0.0, position_embedding="rotary")
    model = TrajectoryTransformer(config).eval()
    with torch.no_grad():
        model.heads.mul_(50)  # sharpen the random model so that the mixture is far from uniform
    first = torch.tensor([[1, 2]])
    exact = torch.zeros(V)
    with torch.no_grad():
        for action in range(V):
            for reward in range(V):
                sequence = torch.tensor([[1, 2, action, reward, 0]])  # the value token is never attended
                probabilities = model(sequence)[0, :, :V].softmax(-1)
                exact += probabilities[1, action] * probabilities[2, reward] * probabilities[4]
    marginals, _ = transformer_marginals(model, first, 20000, 1, torch.Generator().manual_seed(0), crop=False)
    assert exact.max() > 0.4  # a distribution worth testing
    assert torch.allclose(marginals[0, 0, 0], exact, atol=0.02)


class FixedGaussian:
    """A stand-in ensemble: the same Gaussian whatever the input."""

    def __init__(self, members, mean, log_var):
        self.members, self.mean, self.log_var = members, torch.tensor(mean), torch.tensor(log_var)

    def __call__(self, x):
        shape = (*x.shape[:-1], len(self.mean))
        return self.mean.expand(shape), self.log_var.expand(shape)


def test_the_feed_forward_density_by_hand():
    """Step 1: every particle starts at s0, so the mixture is one Gaussian N(s0 + change, var),
    summed over dims; rollouts must divide among the members."""
    change, log_var = [0.5, -1.0], [np.log(0.04), np.log(0.25)]
    model = FeedForwardModel(FixedGaussian(2, change, log_var), FixedGaussian(2, [0.0], [-20.0]),
                             torch.tensor([-1.0]), torch.tensor([1.0]))
    first = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    truth = torch.tensor([[[0.7, 0.2], [0.0, 0.0]], [[2.5, 1.0], [0.0, 0.0]]])  # (S, horizon, N)
    scores, future = feed_forward_log_density(model, first, truth, 6, torch.Generator().manual_seed(0))

    def normal(x, mean, var):
        return -0.5 * math.log(2 * math.pi * var) - (x - mean) ** 2 / (2 * var)

    expected = [normal(0.7, 0.5, 0.04) + normal(0.2, 0.0, 0.25), normal(2.5, 2.5, 0.04) + normal(1.0, 1.0, 0.25)]
    assert scores[:, 0].tolist() == pytest.approx(expected, abs=1e-4)
    assert torch.isfinite(scores).all() and future.shape == (2, 2, 2)
    with pytest.raises(PipelineError, match="multiple of analyze.ensemble.members"):
        feed_forward_log_density(model, first, truth, 5, torch.Generator().manual_seed(0))


def test_hidden_dims_are_drawn_once_and_about_half():
    spec = AblationSpec(hidden_probability=0.5, mask_seed=0)
    kept = spec.observed_dims(40)
    assert kept == spec.observed_dims(40) and 10 < len(kept) < 30
    assert AblationSpec(hidden_probability=0.5, mask_seed=1).observed_dims(40) != kept
    assert len(AblationSpec(hidden_probability=0.99).observed_dims(3)) >= 1  # never an unobservable environment
    data = np.random.default_rng(0).normal(size=(200, 40 + 2 + 2))
    discretizer = Discretizer.fit(data, "quantile", DiscretizeSpec(n_bins=10), 40, 2)
    view = discretizer.observing(kept)
    assert view.observation_dim == len(kept) and view.transition_dim == len(kept) + 4
    assert np.array_equal(view.tokenize(data[:, kept + list(range(40, 44))]), discretizer.tokenize(data)[:, kept + list(range(40, 44))])


def test_too_short_held_out_paths_are_refused_in_one_line():
    paths = [np.zeros((50, 6)), np.zeros((30, 6))]
    assert len(held_out_paths(paths, [0, 1], 1, 49)) == 1
    with pytest.raises(PipelineError, match="lower analyze.horizon or analyze.starts"):
        held_out_paths(paths, [0, 1], 2, 49)
