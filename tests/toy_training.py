"""A tiny deterministic training run on a toy trajectory; a script so tests can run it under
torchrun (DDP) or kill it midway (resume)."""

import sys
from pathlib import Path

import numpy as np

from trajectory_transformer.datasets import Transitions
from trajectory_transformer.discretization import DiscretizeSpec, Discretizer
from trajectory_transformer.trajectories import SequenceSpec, joined_paths
from trajectory_transformer.training import ArchitectureSpec, OptimSpec, RunIdentity, RunSpec, TrainSpec, tokenize_paths, train

SEQUENCE = SequenceSpec(discount=0.9, window=3, max_path_length=8)


def toy_transitions(paths: int = 24, length: int = 8) -> Transitions:
    """Every path walks 0, 1, ..., length-1; the action is the position, the reward 1."""
    position = np.tile(np.arange(length, dtype=np.float32), paths)
    ends = np.zeros(paths * length, bool)
    ends[length - 1 :: length] = True
    return Transitions(position[:, None], position[:, None] / length, np.ones_like(position), np.zeros_like(ends), ends)


def toy_setup():
    transitions = toy_transitions()
    joined = np.concatenate(joined_paths(transitions, SEQUENCE))
    discretizer = Discretizer.fit(joined, "uniform", DiscretizeSpec(n_bins=8), observation_dim=1, action_dim=1)
    return tokenize_paths(transitions, discretizer, SEQUENCE), discretizer


def toy_spec(max_updates: int, checkpoint_every: int = 1000, dropout: float = 0.0, threads: int = 1) -> TrainSpec:
    return TrainSpec(
        model=ArchitectureSpec(n_layer=1, n_head=2, n_embd=32, dropout=dropout),
        optim=OptimSpec(learning_rate=3e-3, batch_size=16, max_updates=max_updates, warmup_updates=10),
        run=RunSpec(eval_every=20, checkpoint_every=checkpoint_every, log_every=5, cpu_threads=threads, device="cpu"),
    )


def run(out: Path, max_updates: int, checkpoint_every: int = 1000, dropout: float = 0.0, seed: int = 0) -> dict:
    token_paths, discretizer = toy_setup()
    identity = RunIdentity("toy", "data", "discretizer", "uniform", seed)
    return train(token_paths, discretizer, SEQUENCE, toy_spec(max_updates, checkpoint_every, dropout), identity,
                 out / "model", out / "report", out / "checkpoint.pt", progress=False)


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
