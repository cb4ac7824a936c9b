"""Model analysis (paper section 4.1): how well a trained model predicts long futures, read top to bottom.

Compounding error (Figure 3). From the first observation of each of `starts` held-out paths (the
training run's own validation split: never trained on) the model samples `rollouts` futures of
`horizon` transitions, every token drawn from its full distribution: actions, rewards and next
observations alike (policy-conditioned prediction without a policy). The state marginal of
dimension d at step t is the rollouts' average of the model's predictive distribution for that
token: the same expectation as a histogram of the sampled tokens, with far less variance, and
never zero where the model is not. Each bin is a uniform density over its range. The score at
step t is the log-density of the true held-out observation under these marginals, summed over
dimensions (1000 samples cannot estimate a joint over N dimensions; the per-dimension marginals
are what Figure 3 plots), averaged over the starts.
Conventions, stated because they move numbers: sampling is conditioned on no termination
(the termination token is left out and the bins renormalized); a true value beyond the
outer edges is scored in the outer bin (the fraction is reported: `outside_bins`). A bin
probability that underflows float32 in every rollout is floored at the smallest normal float32.

The discrete oracle (Appendix B) puts all mass on the true bin: sum_d log(1 / width of the true
bin); for uniform bins that is sum_d log(V / (r_d - l_d)), the appendix's formula.

The baseline is a PETS-style probabilistic ensemble (`ensemble.py`) of next-observation models
p(s' | s, a); as PETS needs a policy and the Transformer models its own, actions come from a
feed-forward Gaussian behaviour policy p(a | s), an ensemble of the same kind fitted to the same
training paths. Each particle follows one member (PETS's TS-inf). Its marginal at step t is the
mixture, over particles, of their Gaussian predictions of s_t, per dimension like the
Transformer's.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from trajectory_transformer.config import Count, Natural
from trajectory_transformer.discretization import Discretizer
from trajectory_transformer.ensemble import EnsembleSpec, GaussianEnsemble, fit_ensemble, gaussian_log_density
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.model import TrajectoryTransformer
from trajectory_transformer.planner import make_decoder, sample
from trajectory_transformer.training import AblationSpec

ORACLE = "discrete oracle"
SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)
SMALLEST_BIN_WIDTH = 1e-6  # collapsed quantile edges (repeated values) would give an infinite density


@dataclass
class AblationsSpec:
    """`analyze.ablations`: the paper's three variants of the trained model."""

    markovian: AblationSpec = field(default_factory=lambda: AblationSpec(history_transitions=1))
    partially_observed: AblationSpec = field(default_factory=lambda: AblationSpec(hidden_probability=0.5))
    partially_observed_markovian: AblationSpec = field(default_factory=lambda: AblationSpec(history_transitions=1, hidden_probability=0.5))


@dataclass
class AnalyzeSpec:
    """The `analyze` section of params.yaml."""

    datasets: list[str] = field(default_factory=list)  # the datasets analyzed
    kinds: list[str] = field(default_factory=lambda: ["uniform"])  # their discretizer kinds (Figure 3: uniform)
    seeds: list[Natural] = field(default_factory=lambda: [0])  # their training seeds
    ablations: AblationsSpec = field(default_factory=AblationsSpec)
    starts: Count = 4  # held-out paths, each rolled out from its first observation
    rollouts: Count = 1000  # sampled futures per start (the paper: 1000)
    horizon: Count = 100  # predicted transitions (the paper: 100)
    ensemble: EnsembleSpec = field(default_factory=EnsembleSpec)
    cached: bool = True  # false: recompute the whole window for every token (the oracle of the cache)
    seed: Natural = 0
    device: str = "auto"
    cpu_threads: Count = 2


# ---------------------------------------------------------------------------------------------
# Held-out starts


def held_out_paths(paths: list[np.ndarray], validation: list[int], starts: int, horizon: int) -> list[np.ndarray]:
    """The first `starts` held-out paths long enough to score `horizon` predicted transitions."""
    long_enough = [paths[i] for i in validation if len(paths[i]) > horizon]
    if len(long_enough) < starts:
        longest = max((len(paths[i]) for i in validation), default=0)
        raise PipelineError(f"params analyze: {len(long_enough)} held-out paths have more than {horizon} transitions "
                            f"(the longest has {longest}), {starts} needed: lower analyze.horizon or analyze.starts")
    return long_enough[:starts]


# ---------------------------------------------------------------------------------------------
# The Transformer's marginals


@torch.inference_mode()
def transformer_marginals(model: TrajectoryTransformer, first_observations: torch.Tensor, rollouts: int, horizon: int,
                          generator: torch.Generator, crop: bool, cached: bool = True,
                          progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, horizon, N, V) marginal bin probabilities of the next `horizon` observations, from
    `rollouts` sampled futures of each of S first observations (tokens, (S, N)); and the
    observation tokens (S, horizon, N) of the first sampled future of each (Figure 2).

    Window policy once a rollout outgrows the training window: `crop` (an ablation that must never
    see further back, the Markovian one) crops exactly as published; otherwise the window slides as
    in the planner (sliding-window attention over cached keys, which at depth carry what their own
    window saw): exact cropping would re-encode window - 1 transitions per step. Learned positions
    always crop and re-encode (uncached), as the published planner does."""
    config = model.config
    if config.goal_length:
        raise PipelineError("the analysis rolls out models without a goal prefix: analyze a dataset whose task is not goal-reaching")
    N, M, V = config.observation_dim, config.action_dim, config.n_bins
    S = first_observations.shape[0]
    rows = first_observations.repeat_interleave(rollouts, dim=0)  # one row per rollout: (S R, N)
    decoder = make_decoder(model, config.window, rows, cached, crop=crop)
    marginals = torch.zeros(S, horizon, N, V, device=rows.device)
    first_future = torch.zeros(S, horizon, N, dtype=torch.long, device=rows.device)
    for t in tqdm(range(horizon), desc="transformer rollouts", unit="step", disable=not progress, mininterval=1):
        for position in range(M + 2 + N):  # action, reward, value, then the next observation
            probabilities = decoder.logits()[..., :V].float().softmax(dim=-1).reshape(S, rollouts, V)
            uniform = torch.rand(S, rollouts, generator=generator, device=rows.device)
            tokens = sample(probabilities.log(), uniform)
            if position >= M + 2:
                marginals[:, t, position - M - 2] = probabilities.mean(dim=1)
                first_future[:, t, position - M - 2] = tokens[:, 0]
            decoder.append(tokens.view(S * rollouts, 1, 1))
    return marginals, first_future


def true_bins(observations: np.ndarray, discretizer: Discretizer) -> tuple[np.ndarray, np.ndarray]:
    """The bin of each observation value (..., N) and that bin's width (floored)."""
    N = discretizer.observation_dim
    tokens = discretizer.tokenize(observations, slice(0, N))
    widths = np.maximum(np.diff(discretizer.edges[:N], axis=1), SMALLEST_BIN_WIDTH)  # (N, V)
    return tokens, widths[np.arange(N), tokens]


def bin_log_density(marginals: np.ndarray, observations: np.ndarray, discretizer: Discretizer) -> tuple[np.ndarray, np.ndarray]:
    """Log-density of `observations` (..., N) under per-dimension bin probabilities (..., N, V),
    uniform within each of the discretizer's observation bins: summed over N. Also whether each
    value fell outside the outer edges (scored in the outer bin)."""
    tokens, widths = true_bins(observations, discretizer)
    # a probability that underflowed float32 in every rollout scores -87 nats, not -inf for the whole curve
    probability = np.maximum(np.take_along_axis(marginals, tokens[..., None], axis=-1)[..., 0], SMALLEST_PROBABILITY)
    edges = discretizer.edges[: discretizer.observation_dim]
    outside = (observations < edges[:, 0]) | (observations > edges[:, -1])
    return (np.log(probability) - np.log(widths)).sum(axis=-1), outside


def oracle_log_density(observations: np.ndarray, discretizer: Discretizer) -> np.ndarray:
    """Appendix B: the log-density of a model with all mass on the true bin, summed over dims."""
    return -np.log(true_bins(observations, discretizer)[1]).sum(axis=-1)


# ---------------------------------------------------------------------------------------------
# The feed-forward baseline


@dataclass
class FeedForwardModel:
    dynamics: GaussianEnsemble  # (s, a) -> s' - s
    policy: GaussianEnsemble  # s -> a
    action_low: torch.Tensor
    action_high: torch.Tensor


def fit_feed_forward(paths: list[np.ndarray], observation_dim: int, action_dim: int, spec: EnsembleSpec, seed: int,
                     device: torch.device, progress: bool = True) -> FeedForwardModel:
    """Fit the dynamics and behaviour-policy ensembles on training paths (N + M + 2 columns)."""
    N, M = observation_dim, action_dim
    current = np.concatenate([p[:-1] for p in paths])
    following = np.concatenate([p[1:, :N] for p in paths])
    every = np.concatenate(paths)
    dynamics = fit_ensemble(current[:, : N + M], following - current[:, :N], spec, seed, device, progress)
    policy = fit_ensemble(every[:, :N], every[:, N : N + M], spec, seed + 1, device, progress)
    as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)  # noqa: E731
    return FeedForwardModel(dynamics, policy, as_tensor(every[:, N : N + M].min(axis=0)), as_tensor(every[:, N : N + M].max(axis=0)))


@torch.no_grad()
def feed_forward_log_density(model: FeedForwardModel, first_observations: torch.Tensor, true_observations: torch.Tensor,
                             rollouts: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, horizon) log-density of the true observations (S, horizon, N) under the particles'
    per-dimension Gaussian mixtures, rolled out from the S first observations (S, N); and the
    first particle's sampled future (S, horizon, N) of each start."""
    members = model.dynamics.members
    if rollouts % members:
        raise PipelineError(f"params analyze.rollouts {rollouts} must be a multiple of analyze.ensemble.members {members}")
    S, horizon, N = true_observations.shape
    # particles (members, S, rollouts / members, N): each follows its own member
    observation = first_observations[None, :, None, :].expand(members, S, rollouts // members, N).reshape(members, -1, N)
    scores = torch.zeros(S, horizon, device=first_observations.device)
    first_future = torch.zeros(S, horizon, N, device=first_observations.device)
    for t in range(horizon):
        mean, log_var = model.policy(observation)
        action = mean + (0.5 * log_var).exp() * torch.randn(mean.shape, generator=generator, device=mean.device)
        action = torch.maximum(torch.minimum(action, model.action_high), model.action_low)
        change, log_var = model.dynamics(torch.cat([observation, action], dim=-1))
        mean = observation + change
        truth = true_observations[:, t][None, :, None, :]
        density = gaussian_log_density(truth, mean.view(members, S, -1, N), log_var.view(members, S, -1, N))
        mixture = density.permute(1, 0, 2, 3).reshape(S, rollouts, N).logsumexp(dim=1) - np.log(rollouts)
        scores[:, t] = mixture.sum(dim=-1)
        observation = mean + (0.5 * log_var).exp() * torch.randn(mean.shape, generator=generator, device=mean.device)
        first_future[:, t] = observation.view(members, S, -1, N)[0, :, 0]
    return scores, first_future


# ---------------------------------------------------------------------------------------------
# One model's curve


@dataclass
class Curve:
    log_density: np.ndarray  # (horizon,) mean over starts
    standard_error: np.ndarray  # (horizon,)
    outside_bins: float = 0.0  # fraction of true values beyond the discretizer's outer edges
    prediction: np.ndarray | None = None  # (S, horizon, N) one sampled future per start, decoded (Figure 2)


def summarize_curve(per_start: np.ndarray, outside: float = 0.0, prediction: np.ndarray | None = None) -> Curve:
    spread = per_start.std(axis=0, ddof=1) / np.sqrt(len(per_start)) if len(per_start) > 1 else np.zeros(per_start.shape[1])
    return Curve(per_start.mean(axis=0), spread, outside, prediction)


def transformer_curve(model: TrajectoryTransformer, discretizer: Discretizer, starts: list[np.ndarray], spec: AnalyzeSpec,
                      device: torch.device, crop: bool, progress: bool = True) -> Curve:
    """Compounding error of one Transformer over held-out paths (observation columns first)."""
    N = model.config.observation_dim
    first = torch.as_tensor(discretizer.tokenize(np.stack([p[0, :N] for p in starts]), slice(0, N)), device=device)
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    marginals, first_future = transformer_marginals(model, first, spec.rollouts, spec.horizon, generator, crop, spec.cached, progress)
    truth = np.stack([p[1 : spec.horizon + 1, :N] for p in starts])
    per_start, outside = bin_log_density(marginals.cpu().double().numpy(), truth, discretizer)
    return summarize_curve(per_start, float(outside.mean()), discretizer.reconstruct(first_future.cpu().numpy(), slice(0, N)))


def oracle_curve(discretizer: Discretizer, starts: list[np.ndarray], horizon: int) -> Curve:
    N = discretizer.observation_dim
    return summarize_curve(oracle_log_density(np.stack([p[1 : horizon + 1, :N] for p in starts]), discretizer))


def feed_forward_curve(model: FeedForwardModel, starts: list[np.ndarray], observation_dim: int, spec: AnalyzeSpec,
                       device: torch.device) -> Curve:
    N = observation_dim
    as_tensor = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device)  # noqa: E731
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    scores, first_future = feed_forward_log_density(model, as_tensor(np.stack([p[0, :N] for p in starts])),
                                                    as_tensor(np.stack([p[1 : spec.horizon + 1, :N] for p in starts])),
                                                    spec.rollouts, generator)
    return summarize_curve(scores.cpu().double().numpy(), prediction=first_future.cpu().double().numpy())


# ---------------------------------------------------------------------------------------------
# Attention maps (Figure 4) and the figures


@torch.no_grad()
def attention_maps(model: TrajectoryTransformer, tokens: torch.Tensor) -> np.ndarray:
    """(layers, heads, L, L) attention weights of one forward pass over a window (1, L)."""
    for block in model.blocks:
        block.attn.explicit = True
    try:
        model(tokens)
        return np.stack([block.attn.weights[0].float().cpu().numpy() for block in model.blocks])
    finally:
        for block in model.blocks:
            block.attn.explicit, block.attn.weights = False, None


def draw_compounding_error(panels: dict[str, dict[str, Curve]], path: Path) -> None:
    """Figure 3: a panel per environment variant, log-density of the true states versus horizon."""
    figure = Figure(figsize=(5.5 * len(panels), 4))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (title, curves) in zip(axes[0], panels.items()):
        for name, curve in curves.items():
            steps = np.arange(1, len(curve.log_density) + 1)
            style = {"color": "black", "linestyle": "--"} if name == ORACLE else {}
            axis.plot(steps, curve.log_density, label=name, **style)
            axis.fill_between(steps, curve.log_density - curve.standard_error, curve.log_density + curve.standard_error, alpha=0.2)
        axis.set(title=title, xlabel="prediction horizon (transitions)", ylabel="log-likelihood of the true state")
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def draw_attention(maps: np.ndarray, transition_dim: int, folder: Path) -> None:
    """One PNG per layer and head; lines mark transition boundaries (rows: queries, columns: keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    for layer, heads in enumerate(maps):
        for head, weights in enumerate(heads):
            figure = Figure(figsize=(4, 4))
            axis = figure.subplots()
            axis.imshow(weights, cmap="magma", interpolation="nearest")
            for boundary in np.arange(transition_dim, weights.shape[0], transition_dim) - 0.5:
                axis.axhline(boundary, color="white", linewidth=0.3)
                axis.axvline(boundary, color="white", linewidth=0.3)
            axis.set(title=f"layer {layer}, head {head}", xlabel="key token", ylabel="query token")
            figure.tight_layout()
            figure.savefig(folder / f"layer-{layer}-head-{head}.png", dpi=120)
