"""Training the Trajectory Transformer, top to bottom (docs/published-system.md §3).

Teacher forcing with the weighted cross-entropy (observation 1, action 5, reward 1, value 1),
AdamW with decay on Linear weights only, gradient clipping, linear warm-up then cosine decay to a
floor, epochs scaled by dataset size. A held-out split of paths gives a validation loss per
token group. CUDA: bf16 autocast, TF32, fused AdamW, no host synchronization inside the step.
Multi-GPU / multi-node through `torchrun` (DistributedDataParallel): every rank takes its slice
of the same global batch. Resumable from atomic checkpoints; a CPU run is deterministic.
"""

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from trajectory_transformer import __version__
from trajectory_transformer.artifacts import atomic_directory, file_hash, verified_folder_hash, write_json, write_training_report
from trajectory_transformer.config import Count, Natural, NonNegative, Positive, Probability, parse
from trajectory_transformer.datasets import ObservationSpec, Transitions, load_transitions
from trajectory_transformer.discretization import Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.model import (
    TOKEN_GROUPS, ModelConfig, TrajectoryTransformer, parameter_count, target_groups, token_losses, weighted_loss,
)
from trajectory_transformer.trajectories import SequenceSpec, joined_paths
from trajectory_transformer.weights import load_checkpoint, load_weights, resolve_device, save_checkpoint, save_weights, use_cpu_threads

CHECKPOINT_FORMAT = "trajectory-transformer-checkpoint/1"
MODEL_FORMAT = "trajectory-transformer-model/2"  # /2: the file records its own SHA-256
VALIDATION_SPLIT_SEED = 0  # the same held-out paths for every training seed


@dataclass
class ArchitectureSpec:
    """`train.model` in params.yaml."""

    n_layer: Count = 4
    n_head: Count = 4
    n_embd: Count = 128
    dropout: Probability = 0.1
    position_embedding: Literal["learned", "rotary"] = "rotary"  # learned: the paper's (docs/departures.md)


@dataclass
class OptimSpec:
    """`train.optim` in params.yaml."""

    learning_rate: Positive = 6e-4
    betas: list[Probability] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: NonNegative = 0.1
    grad_clip: Positive = 1.0
    batch_size: Count = 256
    epoch_scale: Positive = 50.0  # epochs = int(1e6 / windows * epoch_scale), as published
    max_updates: Count | None = None  # a cap for CPU-sized runs
    warmup_updates: Natural | None = None  # null: one epoch, as published
    final_lr_fraction: Probability = 0.1
    # cosine: after warm-up, cosine decay over the rest of the run, reaching the floor at its end;
    # published: the authors' code, cosine over 20 epochs of warm-up-sized steps with progress
    # never clamped (it falls to the floor, stays there, and rises again past 24 epochs)
    lr_schedule: Literal["cosine", "published"] = "cosine"
    observation_weight: NonNegative = 1.0
    action_weight: NonNegative = 5.0
    reward_weight: NonNegative = 1.0
    value_weight: NonNegative = 1.0


@dataclass
class RunSpec:
    """`train.run` in params.yaml."""

    validation_fraction: Probability = 0.05
    validation_batches: Count = 8
    eval_every: Count = 250
    checkpoint_every: Count = 250
    log_every: Count = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: Count = 2


@dataclass
class AblationSpec:
    """One entry of `analyze.ablations` (paper section 4.1): the same training, changed so.

    `history_transitions: 1` is the Markovian variant: trained on windows of that many past
    transitions and the current one (`sequence.window` = 2), it never sees further back, at
    any depth (a sliding attention mask would not do: each layer reaches one window further).
    `hidden_probability` hides each
    observation dimension with that probability (drawn once, from `mask_seed`, so every seed and
    every model of the analysis sees the same partially observed environment)."""

    history_transitions: Count | None = None
    hidden_probability: float = 0.0
    mask_seed: Natural = 0

    def sequence(self, sequence: SequenceSpec) -> SequenceSpec:
        if self.history_transitions is None:
            return sequence
        return dataclasses.replace(sequence, window=self.history_transitions + 1)

    def observed_dims(self, observation_dim: int) -> list[int]:
        if not 0.0 <= self.hidden_probability < 1.0:
            raise PipelineError(f"params analyze.ablations: hidden_probability must be in [0, 1), got {self.hidden_probability}")
        hidden = np.random.default_rng(self.mask_seed).random(observation_dim) < self.hidden_probability
        if hidden.all():  # an environment with nothing observed has nothing to predict
            hidden[np.random.default_rng(self.mask_seed).integers(observation_dim)] = False
        return [int(d) for d in np.flatnonzero(~hidden)]


@dataclass
class TrainSpec:
    """The `train` section of params.yaml."""

    seeds: list[Natural] = field(default_factory=lambda: [0])
    model: ArchitectureSpec = field(default_factory=ArchitectureSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    run: RunSpec = field(default_factory=RunSpec)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Windows:
    """All training windows of a tokenized dataset, in one flat tensor (on any device).

    Windows start at every step of a path but its last; steps past the path's end are the
    termination token and stay in the loss; only steps past the maximum path length are masked.

    Each path's tokens are followed by `window` rows of the termination token, so a window is a
    plain slice `tokens[start : start + window]`; `step` holds each row's step index within its
    path, which decides the loss mask.
    """

    tokens: torch.Tensor  # (rows, transition_dim) int64
    step: torch.Tensor  # (rows,) step index within the path; padding continues counting
    starts: torch.Tensor  # (windows,) row index of each window's first transition
    path_of_start: torch.Tensor  # (windows,) which path each window comes from
    window: int
    max_path_length: int

    @classmethod
    def build(cls, token_paths: list[np.ndarray], termination_token: int, window: int, max_path_length: int):
        if not token_paths:
            raise PipelineError("no paths to build training windows from")
        dim = token_paths[0].shape[1]
        rows, steps, starts, owners, offset = [], [], [], [], 0
        for index, path in enumerate(token_paths):
            length = len(path)
            rows += [path, np.full((window, dim), termination_token, dtype=path.dtype)]
            steps.append(np.arange(length + window))
            path_starts = offset + np.arange(max(length - 1, 0))
            starts.append(path_starts)
            owners.append(np.full(len(path_starts), index))
            offset += length + window
        starts = np.concatenate(starts)
        if len(starts) == 0:
            raise PipelineError(f"every path is a single step: no window of {window} transitions can be built")
        return cls(
            tokens=torch.from_numpy(np.concatenate(rows).astype(np.int64)),
            step=torch.from_numpy(np.concatenate(steps)),
            starts=torch.from_numpy(starts),
            path_of_start=torch.from_numpy(np.concatenate(owners)),
            window=window,
            max_path_length=max_path_length,
        )

    def to(self, device) -> "Windows":
        moved = {k: getattr(self, k).to(device) for k in ("tokens", "step", "starts", "path_of_start")}
        return Windows(**moved, window=self.window, max_path_length=self.max_path_length)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model input, target and loss mask for windows `indices`, flattened to tokens:
        input = tokens[:-1], target = tokens[1:], mask 0 past the maximum path length."""
        rows = self.starts[indices][:, None] + torch.arange(self.window, device=indices.device)
        tokens = self.tokens[rows].reshape(len(indices), -1)
        inside = (self.step[rows] < self.max_path_length).float()
        mask = inside.repeat_interleave(self.tokens.shape[1], dim=1)
        return tokens[:, :-1], tokens[:, 1:], mask[:, 1:]


@dataclass
class TokenData:
    train: Windows
    validation: Windows | None
    train_goals: torch.Tensor  # (paths, G) goal tokens of each training path
    validation_goals: torch.Tensor
    train_maps: torch.Tensor | None  # (paths, H, W) map context of each training path
    validation_maps: torch.Tensor | None


def tokenize_paths(transitions: Transitions, discretizer: Discretizer, sequence: SequenceSpec) -> list[np.ndarray]:
    if (transitions.observations.shape[1], transitions.actions.shape[1]) != (discretizer.observation_dim, discretizer.action_dim):
        raise PipelineError(
            f"the discretizer was fitted for {discretizer.observation_dim}+{discretizer.action_dim} observation+action "
            f"dims, the dataset has {transitions.observations.shape[1]}+{transitions.actions.shape[1]}: rerun its discretize stage"
        )
    paths = joined_paths(transitions, sequence)
    lengths = [len(p) for p in paths]
    tokens = discretizer.tokenize(np.concatenate(paths))
    return np.split(tokens, np.cumsum(lengths)[:-1])


@dataclass
class TokenizedDataset:
    """A dataset as the model sees it."""

    transitions: Transitions
    discretizer: Discretizer  # the one fitted on these transitions
    token_paths: list[np.ndarray]  # per path, (steps, transition_dim) tokens: observation, action, reward, value
    sha256: str  # the dataset folder's, as models and agents record it


def load_dataset(data_dir: str | Path, discretizer_dir: str | Path, observation: ObservationSpec | dict | None = None,
                 sequence: SequenceSpec | dict | None = None, where: str = "dataset") -> TokenizedDataset:
    """A fetched dataset (`data/raw/<name>`) and its discretizer (`data/discretized/<name>/<kind>`),
    both verified against what their stages recorded, tokenized into paths. `observation` and
    `sequence` are the dataset's `observation` params and the `sequence` params (defaults if None)."""
    data_dir, discretizer_dir = Path(data_dir), Path(discretizer_dir)
    if not isinstance(observation, ObservationSpec):
        observation = parse(ObservationSpec, observation or {}, f"{where}.observation")
    if not isinstance(sequence, SequenceSpec):
        sequence = parse(SequenceSpec, sequence or {}, "sequence")
    discretizer = Discretizer.load(discretizer_dir / "discretizer.json")
    sha256 = verified_folder_hash(data_dir, "dataset")
    if discretizer.dataset_sha256 != sha256:
        raise PipelineError(f"the discretizer in {discretizer_dir} was fitted on other data than {data_dir}: "
                            f"rerun its discretize stage (`dvc repro`)")
    transitions = load_transitions(data_dir, observation, where)
    return TokenizedDataset(transitions, discretizer, tokenize_paths(transitions, discretizer, sequence), sha256)


def validation_split(paths: int, fraction: float) -> tuple[list[int], list[int]]:
    """(training, held-out) path indices; the same held-out paths for every training seed."""
    order = np.random.default_rng(VALIDATION_SPLIT_SEED).permutation(paths)
    held_out = 0 if paths < 2 or fraction <= 0 else min(max(round(fraction * paths), 1), paths - 1)
    return sorted(int(i) for i in order[held_out:]), sorted(int(i) for i in order[:held_out])


def prepare(token_paths: list[np.ndarray], discretizer: Discretizer, sequence: SequenceSpec, validation_fraction: float,
            goal_tokens: np.ndarray | None = None, path_maps: np.ndarray | None = None) -> TokenData:
    """Hold out a fraction of paths, build both window sets and each path's goal tokens
    (`goal_tokens` (paths, G)) and map."""
    train_indices, validation_indices = validation_split(len(token_paths), validation_fraction)
    validation_paths = [token_paths[i] for i in validation_indices]
    train_paths = [token_paths[i] for i in train_indices]
    if goal_tokens is None:
        goal_tokens = np.zeros((len(token_paths), 0), dtype=np.int64)

    def goals(indices):
        return torch.from_numpy(goal_tokens[np.asarray(indices, dtype=np.int64)].astype(np.int64))

    def maps(indices):
        return None if path_maps is None else torch.from_numpy(path_maps[np.asarray(indices, dtype=np.int64)])

    def windows(paths):
        return Windows.build(paths, discretizer.termination_token, sequence.window, sequence.max_path_length)

    return TokenData(
        train=windows(train_paths),
        validation=windows(validation_paths) if validation_paths and any(len(p) > 1 for p in validation_paths) else None,
        train_goals=goals(train_indices),
        validation_goals=goals(validation_indices),
        train_maps=maps(train_indices),
        validation_maps=maps(validation_indices),
    )


# ---------------------------------------------------------------------------------------------
# Devices, schedule, checkpoints


def learning_rate(update: int, total: int, warmup: int, per_epoch: int, spec: OptimSpec) -> float:
    """Linear warm-up, then cosine decay with a floor of `final_lr_fraction` of the peak, as
    `spec.lr_schedule` says (the published one: warm-up over one epoch's tokens, final_tokens =
    20 x warm-up tokens, lr = peak * max(floor, cos-schedule(progress)), progress unclamped)."""
    if update < warmup:
        return spec.learning_rate * (update + 1) / warmup
    floor = spec.final_lr_fraction
    if spec.lr_schedule == "published":
        progress = (update - warmup) / max(1, 20 * per_epoch - warmup)
        return spec.learning_rate * max(floor, 0.5 * (1.0 + math.cos(math.pi * progress)))
    progress = (update - warmup) / max(1, total - warmup)
    return spec.learning_rate * (floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def schedule(windows: int, spec: OptimSpec, batch_size: int) -> tuple[int, int, int]:
    """(updates per epoch, total updates, warm-up updates)."""
    per_epoch = max(1, windows // batch_size)
    epochs = max(1, int(1e6 / windows * spec.epoch_scale))
    total = epochs * per_epoch
    if spec.max_updates is not None:
        total = min(total, spec.max_updates)
    warmup = per_epoch if spec.warmup_updates is None else spec.warmup_updates
    return per_epoch, total, min(warmup, total)


def epoch_order(seed: int, epoch: int, windows: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(windows))


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class RunIdentity:
    """Everything the weights depend on; recorded in the model and checked on resume."""

    dataset: str
    dataset_sha256: str
    discretizer_sha256: str
    discretizer_kind: str
    seed: int
    observed_dims: list[int] | None = None  # a partially observed ablation: the dataset dims the model sees
    goal_dims: list[int] = field(default_factory=list)  # goal reaching: dims of the state a path ends in, placed first

    def fingerprint(self, spec: TrainSpec, sequence: SequenceSpec) -> str:
        content = {"identity": asdict(self), "model": asdict(spec.model), "optim": asdict(spec.optim),
                   "run": {k: v for k, v in asdict(spec.run).items() if k not in ("log_every", "checkpoint_every")},
                   "sequence": asdict(sequence)}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def model_config(discretizer: Discretizer, sequence: SequenceSpec, spec: ArchitectureSpec, goal_dims: list[int],
                 path_maps: np.ndarray | None = None) -> ModelConfig:
    if not all(0 <= d < discretizer.observation_dim for d in goal_dims):
        raise PipelineError(f"params datasets.<name>.observation.goal_dims {goal_dims} must be observation dims "
                            f"in [0, {discretizer.observation_dim})")
    if spec.n_embd % spec.n_head or (spec.position_embedding == "rotary" and (spec.n_embd // spec.n_head) % 2):
        raise PipelineError("params train.model.n_embd must be a multiple of n_head (and of 2 n_head for rotary)")
    return ModelConfig(
        observation_dim=discretizer.observation_dim, action_dim=discretizer.action_dim, n_bins=discretizer.n_bins,
        window=sequence.window, n_layer=spec.n_layer, n_head=spec.n_head, n_embd=spec.n_embd, dropout=spec.dropout,
        position_embedding=spec.position_embedding, goal_dims=list(goal_dims),
        map_shape=[] if path_maps is None else list(path_maps.shape[1:]),
        map_codes=0 if path_maps is None else int(path_maps.max()) + 1,
    )


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def get_batch(windows: Windows, goals: torch.Tensor, maps: torch.Tensor | None, indices: torch.Tensor,
              config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Input, target and loss mask of windows `indices`, and what the model is conditioned on
    (each window's path's goal tokens and map), as keyword arguments of its forward pass."""
    inputs, targets, mask = windows.batch(indices)
    paths = windows.path_of_start[indices]
    conditions = {"goal": goals[paths] if config.goal_length else None, "maps": maps[paths] if maps is not None else None}
    return inputs, targets, mask, conditions


@torch.no_grad()
def validation_losses(model: TrajectoryTransformer, windows: Windows, goals: torch.Tensor, maps: torch.Tensor | None,
                      batch_size: int, batches: int, device: torch.device, autocast) -> dict[str, float]:
    """Mean cross-entropy per token group over a fixed subset of held-out windows. A
    goal-conditioned model is also scored with every window given another window's goal
    (`action_other_goal`): how much its actions depend on the goal it is given."""
    model.eval()
    order = torch.from_numpy(np.random.default_rng(VALIDATION_SPLIT_SEED).permutation(len(windows))).to(device)
    sums = torch.zeros(len(TOKEN_GROUPS), device=device)
    counts = torch.zeros(len(TOKEN_GROUPS), device=device)
    other_goal = torch.zeros(len(TOKEN_GROUPS), device=device)
    for start in range(0, min(len(windows), batches * batch_size), batch_size):
        inputs, targets, mask, conditions = get_batch(windows, goals, maps, order[start : start + batch_size], model.config)
        with autocast():
            logits = model(inputs, **conditions)
        groups = target_groups(model.config, inputs.shape[1], device)
        one_hot = torch.nn.functional.one_hot(groups, len(TOKEN_GROUPS)).float()
        sums += torch.einsum("bt,tg->g", token_losses(logits, targets) * mask, one_hot)
        counts += torch.einsum("bt,tg->g", mask, one_hot)
        if model.config.goal_length:  # the windows come in random order: the next one's goal is another path's
            with autocast():
                logits = model(inputs, **{**conditions, "goal": conditions["goal"].roll(1, dims=0)})
            other_goal += torch.einsum("bt,tg->g", token_losses(logits, targets) * mask, one_hot)
    model.train()
    counts = counts.clamp(min=1)
    losses = {f"validation/{name}": value for name, value in zip(TOKEN_GROUPS, (sums / counts).tolist())}
    if model.config.goal_length:
        losses["validation/action_other_goal"] = (other_goal / counts)[TOKEN_GROUPS.index("action")].item()
    return losses


def setup_device(run: RunSpec, local_rank: int) -> torch.device:
    device = resolve_device(run.device, local_rank)
    if device.type == "cpu":
        use_cpu_threads(run.cpu_threads)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


class TrainingLog:
    """The running training loss, summed on the device and read every `log_every` updates (the
    loop's only host sync), the progress bar, and the per-evaluation history a checkpoint carries."""

    def __init__(self, total: int, update: int, description: str, show: bool, device: torch.device,
                 history: list[dict] | None = None, since_evaluation: dict | None = None):
        self.bar = tqdm(total=total, initial=update, desc=description, unit="update", disable=not show, mininterval=1)
        self.history = history or []
        self.since_evaluation = since_evaluation or {"sum": 0.0, "count": 0}
        self.loss = torch.zeros((), device=device)
        self.steps, self.tokens, self.clock = 0, 0, time.perf_counter()

    def add(self, loss: torch.Tensor, tokens: int) -> None:
        self.loss += loss.detach()
        self.steps += 1
        self.tokens += tokens

    def flush(self, world: int) -> None:
        if world > 1:  # the loss of the global batch, not of this rank's slice
            dist.all_reduce(self.loss)
            self.loss /= world
        mean = (self.loss / self.steps).item()
        self.since_evaluation["sum"] += mean * self.steps
        self.since_evaluation["count"] += self.steps
        elapsed = time.perf_counter() - self.clock
        self.bar.set_postfix(loss=f"{mean:.3f}", tokens_per_s=f"{self.tokens / elapsed:,.0f}", refresh=False)
        self.bar.update(self.steps)
        self.loss.zero_()
        self.steps, self.tokens, self.clock = 0, 0, time.perf_counter()

    def evaluation(self, entry: dict) -> None:
        """Close an evaluation period: its mean training loss joins `entry` in the history."""
        self.history.append({"update": entry.pop("update"),
                             "train/loss": self.since_evaluation["sum"] / max(self.since_evaluation["count"], 1), **entry})
        self.since_evaluation = {"sum": 0.0, "count": 0}


def resume(checkpoint: Path, fingerprint: str, model: TrajectoryTransformer, optimizer: torch.optim.Optimizer,
           device: torch.device) -> tuple[int, list[dict] | None, dict | None]:
    """Restore a checkpoint of this very run (its fingerprint): (updates done, history, running
    loss since the last evaluation); (0, None, None) when there is none."""
    if not checkpoint.exists():
        return 0, None, None
    saved = load_checkpoint(checkpoint, CHECKPOINT_FORMAT)
    if saved["fingerprint"] != fingerprint:
        return 0, None, None
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["cpu_rng"])
    if device.type == "cuda" and "cuda_rng" in saved:
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    return saved["update"], saved["history"], saved["running"]


def save_resume_point(checkpoint: Path, fingerprint: str, update: int, log: TrainingLog, model: TrajectoryTransformer,
                      optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    state = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "update": update, "history": log.history,
             "running": log.since_evaluation, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "cpu_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    save_checkpoint(state, checkpoint)


def train(
    token_paths: list[np.ndarray],
    discretizer: Discretizer,
    sequence: SequenceSpec,
    spec: TrainSpec,
    identity: RunIdentity,
    model_dir: Path,
    report_dir: Path,
    checkpoint: Path,
    progress: bool = True,
    path_goals: np.ndarray | None = None,
    path_maps: np.ndarray | None = None,
) -> dict:
    """Train one model; write `model.pt` and `config.json` to `model_dir`, `metrics.json` and
    dvclive curves to `report_dir` (atomically, rank 0). Resumes from `checkpoint` when it
    belongs to this run (same data, discretizer, params and seed). The goal-conditioned variant
    (`identity.goal_dims`) puts each path's goal first, `path_goals` (paths, G): the goal dims of
    the state the path ends in (`trajectories.path_goals`); `path_maps` (paths, H, W) give a
    map-conditioned model each path's map."""
    rank, world, local_rank = distributed_context()
    device = setup_device(spec.run, local_rank)
    if spec.optim.batch_size % world:
        raise PipelineError(f"params train.optim.batch_size {spec.optim.batch_size} must divide by the {world} processes")

    config = model_config(discretizer, sequence, spec.model, identity.goal_dims, path_maps)
    if (path_goals is None) != (not config.goal_dims):
        raise ValueError("a goal-conditioned run (identity.goal_dims) needs its path_goals, and no other run takes them")
    goal_tokens = discretizer.tokenize(path_goals, config.goal_dims) if config.goal_dims else None
    data = prepare(token_paths, discretizer, sequence, spec.run.validation_fraction, goal_tokens, path_maps)
    train_windows = data.train.to(device)
    validation_windows = data.validation.to(device) if data.validation is not None else None
    train_goals, validation_goals = data.train_goals.to(device), data.validation_goals.to(device)
    train_maps, validation_maps = (None, None) if path_maps is None else (data.train_maps.to(device), data.validation_maps.to(device))
    batch_size = min(spec.optim.batch_size, max(world, len(train_windows) // world * world))
    per_epoch, total, warmup = schedule(len(train_windows), spec.optim, batch_size)
    local_batch = batch_size // world

    torch.manual_seed(identity.seed)
    model = TrajectoryTransformer(config).to(device)
    optimizer = torch.optim.AdamW(model.optimizer_groups(spec.optim.weight_decay), lr=spec.optim.learning_rate,
                                  betas=tuple(spec.optim.betas), fused=device.type == "cuda")
    group_weights = torch.tensor([spec.optim.observation_weight, spec.optim.action_weight,
                                  spec.optim.reward_weight, spec.optim.value_weight], device=device)
    groups = target_groups(config, config.block_size, device)
    use_bf16 = device.type == "cuda"

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)

    fingerprint = identity.fingerprint(spec, sequence)
    update, history, running = resume(checkpoint, fingerprint, model, optimizer, device)
    trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None) if world > 1 else model
    log = TrainingLog(total, update, f"train {identity.dataset} seed {identity.seed}", progress and rank == 0, device,
                      history, running)
    order, order_epoch = None, -1
    while update < total:
        epoch, position = divmod(update, per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(identity.seed, epoch, len(train_windows)).to(device), epoch
        global_batch = order[position * batch_size : (position + 1) * batch_size]
        inputs, targets, mask, conditions = get_batch(train_windows, train_goals, train_maps,
                                                      global_batch[rank * local_batch : (rank + 1) * local_batch], config)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(update, total, warmup, per_epoch, spec.optim)
        with autocast():
            logits = trained(inputs, **conditions)
        loss = weighted_loss(token_losses(logits, targets), mask, group_weights, groups)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.optim.grad_clip)
        optimizer.step()
        update += 1
        log.add(loss, inputs.numel() * world)

        boundary = update == total or any(update % every == 0 for every in (spec.run.eval_every, spec.run.checkpoint_every))
        if update % spec.run.log_every == 0 or boundary:
            log.flush(world)
        if update % spec.run.eval_every == 0 or update == total:
            entry = {"update": update, "learning_rate": learning_rate(update - 1, total, warmup, per_epoch, spec.optim)}
            if validation_windows is not None:
                entry.update(validation_losses(model, validation_windows, validation_goals, validation_maps, batch_size,
                                               spec.run.validation_batches, device, autocast))
            log.evaluation(entry)
        if update % spec.run.checkpoint_every == 0 and update < total and rank == 0:
            save_resume_point(checkpoint, fingerprint, update, log, model, optimizer, device)
    log.bar.close()

    metrics = {"updates": total, "parameters": parameter_count(model), "train_windows": len(train_windows),
               "validation_windows": len(validation_windows) if validation_windows is not None else 0, **log.history[-1]}
    if rank == 0:
        write_model(model, config, identity, model_dir, report_dir, metrics, log.history)
        checkpoint.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    return metrics


def write_model(model: TrajectoryTransformer, config: ModelConfig, identity: RunIdentity, model_dir: Path,
                report_dir: Path, metrics: dict, history: list[dict]) -> None:
    metadata = {"model_config": asdict(config), **asdict(identity), "library_version": __version__,
                "torch_version": torch.__version__.split("+")[0]}
    write_training_report(report_dir, metrics, history)
    with atomic_directory(model_dir) as scratch:
        save_weights(model, scratch / "model.safetensors", MODEL_FORMAT, metadata)
        write_json(scratch / "config.json", metadata)


def check_model_inputs(metadata: dict, model_dir: Path, discretizer_dir: Path, data: tuple[Path, str] | None = None) -> None:
    """A trained model belongs to this discretizer (and to the data `(folder, SHA-256)`, when
    given), or one line says what to rerun."""
    if data is not None and metadata["dataset_sha256"] != data[1]:
        raise PipelineError(f"{model_dir} was trained on another dataset than {data[0]}: rerun its stage (`dvc repro`)")
    if metadata["discretizer_sha256"] != file_hash(Path(discretizer_dir) / "discretizer.json"):
        raise PipelineError(f"the model in {model_dir} was trained with another discretizer than {discretizer_dir}: "
                            "rerun its train stage (`dvc repro`)")


def load_model(folder: Path, device: torch.device | str = "cpu") -> tuple[TrajectoryTransformer, dict]:
    """A trained model and its metadata, loaded without unpickling anything."""
    model, metadata = load_weights(Path(folder) / "model.safetensors", MODEL_FORMAT,
                                   lambda metadata: TrajectoryTransformer(ModelConfig(**metadata["model_config"])))
    return model.to(device).eval(), metadata
