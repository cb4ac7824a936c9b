import numpy as np
import pytest
import torch

from trajectory_transformer.datasets import Transitions
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.trajectories import SequenceSpec, joined_paths, path_bounds, reward_to_go
from trajectory_transformer.training import Windows


def transitions(rewards, terminals, timeouts, obs_dim=1, act_dim=1):
    steps = len(rewards)
    return Transitions(
        observations=np.arange(steps * obs_dim, dtype=np.float32).reshape(steps, obs_dim),
        actions=np.zeros((steps, act_dim), np.float32),
        rewards=np.asarray(rewards, np.float32),
        terminals=np.asarray(terminals, bool),
        timeouts=np.asarray(timeouts, bool),
    )


def test_reward_to_go_starts_at_the_next_step():
    # V_t = r_{t+1} + g r_{t+2} + ...; V at the last step is 0
    values = reward_to_go([1.0, 2.0, 3.0, 4.0], discount=0.5)
    assert values == pytest.approx([2 + 0.5 * 3 + 0.25 * 4, 3 + 0.5 * 4, 4.0, 0.0])


def test_termination_penalty_replaces_the_terminal_reward_and_enters_values():
    data = transitions([1, 2, 3, 5, 6], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1])
    paths = joined_paths(data, SequenceSpec(discount=0.5, termination_penalty=-100.0))
    assert [len(p) for p in paths] == [3, 2]
    first, second = paths
    reward, value = first[:, 2], first[:, 3]
    assert reward.tolist() == [1, 2, -100]
    assert value == pytest.approx([2 + 0.5 * -100, -100, 0])
    # a time-out is no terminal: its reward is kept and nothing is bootstrapped
    assert second[:, 2].tolist() == [5, 6]
    assert second[:, 3] == pytest.approx([6, 0])


def test_paths_split_at_terminals_timeouts_and_the_maximum_length():
    data = transitions(np.zeros(9), [0, 1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1])
    assert path_bounds(data, max_path_length=3) == [(0, 2), (2, 5), (5, 8), (8, 9)]


def test_windows_pad_with_the_termination_token_and_mask_past_the_maximum_length():
    path = np.array([[1, 2], [3, 4], [5, 6]])
    windows = Windows.build([path], termination_token=9, window=3, max_path_length=4)
    assert len(windows) == 2  # starts at every step but the last
    inputs, targets, mask = windows.batch(torch.tensor([0, 1]))
    # window from step 1: steps 1, 2 and one padding step (3), all inside the maximum length
    assert torch.cat([inputs[1], targets[1][-1:]]).tolist() == [3, 4, 5, 6, 9, 9]
    assert mask[1].tolist() == [1, 1, 1, 1, 1]
    windows = Windows.build([path], termination_token=9, window=3, max_path_length=2)
    _, targets, mask = windows.batch(torch.tensor([1]))
    # step 1 is inside (targets start at its second token), steps 2 and 3 are past the maximum
    assert mask[0].tolist() == [1, 0, 0, 0, 0]
    assert targets[0].tolist() == [4, 5, 6, 9, 9]


def test_a_dataset_of_single_step_paths_is_refused():
    with pytest.raises(PipelineError, match="single step"):
        Windows.build([np.zeros((1, 2), int)], termination_token=9, window=3, max_path_length=10)
