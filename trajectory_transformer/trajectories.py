"""From flat transitions to the Trajectory Transformer's training sequences (REFERENCE.md 1).

A transition is [observation (N), action (M), reward (1), value (1)]. Paths end at every
terminal or time-out; a true terminal's reward is replaced by the termination penalty (a failure,
such as a fall: a terminal that reaches the task's goal, AntMaze relabeled, keeps its reward); the value
is the discounted reward-to-go from the NEXT step, with no bootstrap at the end of a path.
Training windows start at every step of a path but its last; steps past the path's end are the
termination token and stay in the loss; only steps past the maximum path length are masked.
"""

from dataclasses import dataclass

import numpy as np
import torch

from trajectory_transformer.datasets import Transitions
from trajectory_transformer.errors import PipelineError


@dataclass
class SequenceSpec:
    """The `sequence` section of params.yaml."""

    discount: float = 0.99
    termination_penalty: float = -100.0
    max_path_length: int = 1000
    window: int = 10  # transitions per training window


def path_bounds(transitions: Transitions, max_path_length: int) -> list[tuple[int, int]]:
    """(start, end) of each path: split after every terminal or time-out, and every
    `max_path_length` steps within a longer run (a cut there is a time-out)."""
    ends = np.flatnonzero(transitions.terminals | transitions.timeouts) + 1
    if len(ends) == 0 or ends[-1] != len(transitions.rewards):
        ends = np.append(ends, len(transitions.rewards))
    bounds, start = [], 0
    for end in ends:
        for piece_start in range(start, end, max_path_length):
            bounds.append((piece_start, min(piece_start + max_path_length, end)))
        start = end
    return bounds


def reward_to_go(rewards: np.ndarray, discount: float) -> np.ndarray:
    """V_t = sum_{k=t+1}^{T-1} discount^(k-t-1) r_k; V at the last step is 0."""
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.zeros_like(rewards)
    for t in range(len(rewards) - 2, -1, -1):  # paths are at most max_path_length long
        values[t] = rewards[t + 1] + discount * values[t + 1]
    return values


def joined_paths(transitions: Transitions, spec: SequenceSpec) -> list[np.ndarray]:
    """One (T, N + M + 2) float32 array per path: observation, action, reward, value."""
    paths = []
    for start, end in path_bounds(transitions, spec.max_path_length):
        rewards = transitions.rewards[start:end].astype(np.float64)
        terminal = transitions.terminals[end - 1]
        if terminal and not (transitions.successes is not None and transitions.successes[end - 1]):
            rewards[-1] = spec.termination_penalty
        values = reward_to_go(rewards, spec.discount)
        paths.append(
            np.concatenate(
                [
                    transitions.observations[start:end],
                    transitions.actions[start:end],
                    rewards[:, None],
                    values[:, None],
                ],
                axis=1,
            ).astype(np.float32)
        )
    return paths


def path_maps(transitions: Transitions, spec: SequenceSpec) -> np.ndarray | None:
    """(paths, H, W): the map of each path (its first step's), for a map-conditioned model."""
    if transitions.maps is None:
        return None
    return np.stack([transitions.maps[start] for start, _ in path_bounds(transitions, spec.max_path_length)])


@dataclass
class Windows:
    """All training windows of a tokenized dataset, in one flat tensor (on any device).

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
