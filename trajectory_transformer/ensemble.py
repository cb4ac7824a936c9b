"""A probabilistic ensemble dynamics model (PETS: Chua et al. 2018), the Figure 3 baseline.

The paper compares the Trajectory Transformer's compounding error against the standard
single-step model of model-based RL: an ensemble of feed-forward networks, each predicting a
diagonal Gaussian (mean and log-variance) over its targets, each trained by Gaussian negative
log-likelihood on its own bootstrap resample of the data. The ensemble captures epistemic
uncertainty (members disagree where data is thin), each member's variance the aleatoric noise.

As in PETS: Swish activations, truncated-normal initialization, weight decay on weights only,
Adam, and learned soft bounds on the log-variance (`max_log_var`, `min_log_var`, squashed with
softplus and pulled together by a small regularizer) so the variance can neither explode nor
collapse where there is no data. All members run in one batched matrix multiply per layer.

Departures: targets are standardized as well as inputs (PETS standardizes inputs only), so one
set of bounds suits every output dimension whatever its units; training runs a fixed number of
updates with batches drawn with replacement from each member's bootstrap (PETS runs epochs and
may stop on a held-out set). CPU fits are deterministic for a fixed seed.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trajectory_transformer.config import Count, NonNegative, Positive
from trajectory_transformer.errors import PipelineError

LOG_VAR_BOUNDS = (-10.0, 0.5)  # PETS's initial min / max log-variance, in standardized target units
BOUND_REGULARIZER = 0.01  # PETS's weight on (max_log_var - min_log_var)
STD_FLOOR = 1e-6
LOG_EVERY = 100  # updates between progress-bar refreshes (the loop's only host sync)


@dataclass
class EnsembleSpec:
    """Hyperparameters of the ensemble and its fit; defaults follow PETS / MBPO."""

    members: Count = 5
    hidden: list[Count] = field(default_factory=lambda: [200, 200, 200, 200])  # MBPO's 4 x 200
    learning_rate: Positive = 1e-3  # PETS's Adam step size
    # L2 on weights (not biases). PETS/MBPO use 2.5e-5 .. 1e-4 per layer; mbrl-lib one 5e-5.
    weight_decay: NonNegative = 5e-5
    batch_size: Count = 256  # MBPO (PETS used 32)
    updates: Count = 5000


class GaussianEnsemble(nn.Module):
    """`members` independent MLPs evaluated together, each mapping inputs to a diagonal Gaussian."""

    def __init__(self, inputs: int, outputs: int, members: int, hidden: list[int]):
        super().__init__()
        sizes = [inputs, *hidden, 2 * outputs]  # the last layer emits mean and log-variance
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(members, fan_in, fan_out))
                                        for fan_in, fan_out in zip(sizes, sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(members, 1, fan_out)) for fan_out in sizes[1:])
        for weight, fan_in in zip(self.weights, sizes):
            std = 1 / (2 * fan_in**0.5)  # PETS's truncated normal, cut at two standard deviations
            nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
        # Shared by all members, as in PETS: the bounds describe the data, not one member.
        self.min_log_var = nn.Parameter(torch.full((outputs,), LOG_VAR_BOUNDS[0]))
        self.max_log_var = nn.Parameter(torch.full((outputs,), LOG_VAR_BOUNDS[1]))
        self.register_buffer("input_mean", torch.zeros(inputs))
        self.register_buffer("input_std", torch.ones(inputs))
        self.register_buffer("target_mean", torch.zeros(outputs))
        self.register_buffer("target_std", torch.ones(outputs))

    @property
    def members(self) -> int:
        return self.weights[0].shape[0]

    def standardized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardized inputs (members, B, inputs) -> mean and log-variance in standardized target units."""
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if layer < len(self.weights) - 1:
                x = F.silu(x)
        mean, log_var = x.chunk(2, dim=-1)
        # Soft clamps keep gradients alive at the bounds, unlike a hard clamp.
        log_var = self.max_log_var - F.softplus(self.max_log_var - log_var)
        log_var = self.min_log_var + F.softplus(log_var - self.min_log_var)
        return mean, log_var

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (members, B, inputs) raw (unnormalized) inputs -> (mean, log_var), each (members, B, outputs),
        in the raw units of the targets. To give every member the same rows, pass x.expand(members, -1, -1)."""
        mean, log_var = self.standardized((x - self.input_mean) / self.input_std)
        return mean * self.target_std + self.target_mean, log_var + 2 * self.target_std.log()


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(log_var)) (no summing)."""
    return -0.5 * (np.log(2 * np.pi) + log_var + (x - mean).square() * torch.exp(-log_var))


def column_statistics(values: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and standard deviation (float64 sums, float32 result)."""
    mean, std = values.mean(0), values.std(0)
    # A (near-)constant column keeps its raw scale, as in PETS: dividing by a tiny floor instead
    # would blow up any unseen value of that column at prediction time.
    std = np.where(std < STD_FLOOR, 1.0, std)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)


def checked(inputs: np.ndarray, targets: np.ndarray, spec: EnsembleSpec) -> tuple[np.ndarray, np.ndarray]:
    """The data as float64 arrays, or a PipelineError naming what to fix."""
    inputs, targets = np.asarray(inputs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if inputs.ndim != 2 or targets.ndim != 2:
        raise PipelineError(f"ensemble inputs and targets must be 2-D (rows, columns), got shapes {inputs.shape} and "
                            f"{targets.shape}: reshape them to (T, dims)")
    if len(inputs) != len(targets):
        raise PipelineError(f"ensemble inputs have {len(inputs)} rows but targets {len(targets)}: pass one target row per input row")
    if len(inputs) < 2:
        raise PipelineError(f"the ensemble needs at least 2 rows to standardize and bootstrap, got {len(inputs)}: "
                            f"pass more transitions")
    for name, values in (("inputs", inputs), ("targets", targets)):
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            raise PipelineError(f"ensemble {name} have {bad.sum()} rows with NaN or infinite values (first: row "
                                f"{np.flatnonzero(bad)[0]}): drop or repair those rows before fitting")
    for name in ("members", "batch_size"):
        if getattr(spec, name) < 1:
            raise PipelineError(f"ensemble {name} must be at least 1, got {getattr(spec, name)}")
    if spec.updates < 0:
        raise PipelineError(f"ensemble updates must be at least 0, got {spec.updates}")
    return inputs, targets


def fit_ensemble(inputs: np.ndarray, targets: np.ndarray, spec: EnsembleSpec, seed: int,
                 device: torch.device | str = "cpu", progress: bool = False) -> GaussianEnsemble:
    """Fit on (T, inputs) -> (T, outputs) float arrays; returns the model in eval mode on `device`."""
    inputs, targets = checked(inputs, targets, spec)
    device = torch.device(device)
    rows = len(inputs)
    # Separate streams for initialization, bootstrap and batches, so none echoes another's draws.
    init_seed, bootstrap_seed, batch_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(3))

    with torch.random.fork_rng(devices=[]):  # seed the initialization without touching the caller's RNG
        torch.manual_seed(init_seed)
        model = GaussianEnsemble(inputs.shape[1], targets.shape[1], spec.members, spec.hidden)
    input_mean, input_std = column_statistics(inputs)
    target_mean, target_std = column_statistics(targets)
    for buffer, value in ((model.input_mean, input_mean), (model.input_std, input_std),
                          (model.target_mean, target_mean), (model.target_std, target_std)):
        buffer.copy_(value)
    model.to(device)
    # Standardize once here, so each update only gathers rows.
    x = ((torch.as_tensor(inputs, dtype=torch.float32) - input_mean) / input_std).to(device)
    y = ((torch.as_tensor(targets, dtype=torch.float32) - target_mean) / target_std).to(device)

    # Each member's own resample of the rows, drawn with replacement.
    bootstrap = torch.randint(rows, (spec.members, rows), generator=torch.Generator().manual_seed(bootstrap_seed)).to(device)
    batches = torch.Generator(device=device).manual_seed(batch_seed)  # on the device: no per-update host transfer
    optimizer = torch.optim.Adam([{"params": list(model.weights), "weight_decay": spec.weight_decay},
                                  {"params": [*model.biases, model.min_log_var, model.max_log_var], "weight_decay": 0.0}],
                                 lr=spec.learning_rate, fused=device.type == "cuda")

    model.train()
    running = torch.zeros((), device=device)
    bar = tqdm(total=spec.updates, desc=f"ensemble seed {seed}", unit="update", disable=not progress, mininterval=1)
    for update in range(1, spec.updates + 1):
        positions = torch.randint(rows, (spec.members, spec.batch_size), device=device, generator=batches)
        index = bootstrap.gather(1, positions)  # (members, batch): row numbers in each member's resample
        mean, log_var = model.standardized(x[index])
        # PETS's objective: per member, the mean over rows and dimensions of twice the negative
        # log-likelihood less its constant, summed over members so that each member's gradient
        # does not depend on how many members there are.
        nll = ((mean - y[index]).square() * torch.exp(-log_var) + log_var).mean(dim=(1, 2)).sum()
        loss = nll + BOUND_REGULARIZER * (model.max_log_var.sum() - model.min_log_var.sum())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress:
            running += nll.detach()
            if update % LOG_EVERY == 0 or update == spec.updates:
                steps = (update - 1) % LOG_EVERY + 1
                nll_per_dim = 0.5 * ((running / (steps * spec.members)).item() + np.log(2 * np.pi))  # in standardized units
                bar.set_postfix(nll=f"{nll_per_dim:.3f}", refresh=False)
                bar.update(steps)
                running.zero_()
    bar.close()
    return model.eval()
