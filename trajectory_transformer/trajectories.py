"""From flat transitions to the Trajectory Transformer's training sequences (docs/published-system.md §1).

A transition is [observation (N), action (M), reward (1), value (1)]. Paths end at every
terminal or time-out; a true terminal's reward is replaced by the termination penalty (a failure,
such as a fall: a terminal that reaches the task's goal, AntMaze relabeled, keeps its reward); the value
is the discounted reward-to-go from the NEXT step, with no bootstrap at the end of a path.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from trajectory_transformer.config import Count, Probability
from trajectory_transformer.datasets import Transitions
from trajectory_transformer.errors import PipelineError


@dataclass
class SequenceSpec:
    """The `sequence` section of params.yaml."""

    discount: Probability = 0.99
    termination_penalty: float = -100.0
    max_path_length: Count = 1000
    window: Count = 10  # transitions per training window

    def with_window(self, window: int | None) -> "SequenceSpec":
        """This section as a dataset that sets its own window (`datasets.<name>.sequence`) reads it."""
        return self if window is None else dataclasses.replace(self, window=window)


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


def path_goals(transitions: Transitions, spec: SequenceSpec, goal_dims: list[int]) -> np.ndarray:
    """(paths, G): the `goal_dims` of the state each path ends in, the observation after its last
    step (hindsight: where the path got to). In goal-reaching data that is the goal itself; the
    last step's own observation is one step short of it (on MiniGrid, the square before the goal)."""
    if transitions.next_observations is None:
        raise PipelineError("goal reaching needs the observation after each step (Transitions.next_observations): "
                            "load the dataset with task goal-reaching")
    ends = [end for _, end in path_bounds(transitions, spec.max_path_length)]
    return transitions.next_observations[np.asarray(ends) - 1][:, goal_dims]


def path_maps(transitions: Transitions, spec: SequenceSpec) -> np.ndarray | None:
    """(paths, H, W): the map of each path (its first step's), for a map-conditioned model."""
    if transitions.maps is None:
        return None
    return np.stack([transitions.maps[start] for start, _ in path_bounds(transitions, spec.max_path_length)])
