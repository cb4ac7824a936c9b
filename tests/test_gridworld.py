import numpy as np
import pytest

from trajectory_transformer.gridworld import (
    ACTIONS,
    DOOR,
    EMPTY,
    GOAL,
    TRAINING_SEEDS_START,
    WALL,
    ShortestPathExpert,
    draw_paths,
    is_held_out,
    make_env,
    training_seeds,
)

MINIGRID_LEFT, MINIGRID_RIGHT, MINIGRID_FORWARD, MINIGRID_TOGGLE = 0, 1, 2, 5


def run_episode(env, seed, choose):
    """Steps until the episode ends; returns the observations, the last info, and the step count."""
    obs, _ = env.reset(seed=seed)
    observations = [obs]
    steps = 0
    while True:
        obs, _, terminated, truncated, info = env.step(choose(env))
        observations.append(obs)
        steps += 1
        if terminated or truncated:
            return observations, info, terminated, steps


def test_expert_reaches_the_goal_within_minigrids_step_limit():
    env, expert = make_env(), ShortestPathExpert()
    for seed in range(20):
        observations, info, terminated, steps = run_episode(env, seed, expert.action)
        assert terminated and info["success"], f"seed {seed}"
        assert steps < env.unwrapped.max_steps
        assert tuple(observations[-1]["state"][:2]) == tuple(env.unwrapped.goal_pos)


def test_uniform_random_policy_mostly_fails():
    env, rng = make_env(), np.random.default_rng(0)
    successes = [run_episode(env, seed, lambda _: int(rng.integers(len(ACTIONS))))[1]["success"]
                 for seed in range(20)]
    assert sum(successes) <= 2


def test_map_is_constant_within_an_episode_and_matches_the_grid():
    env, expert = make_env(), ShortestPathExpert()
    observations, _, _, _ = run_episode(env, 3, expert.action)
    first = observations[0]["map"]
    assert all(np.array_equal(obs["map"], first) for obs in observations)
    grid = env.unwrapped.grid
    doors = 0
    for x in range(grid.width):
        for y in range(grid.height):
            cell = grid.get(x, y)
            kind = None if cell is None else cell.type
            assert (first[y, x] == WALL) == (kind == "wall"), (x, y)
            assert (first[y, x] == DOOR) == (kind == "door"), (x, y)
            doors += kind == "door"
            if kind == "door":
                assert cell.is_open  # the expert opened it, yet the map still says DOOR
    assert doors >= 1
    assert env.goal_position == tuple(int(v) for v in env.unwrapped.goal_pos)
    goal_x, goal_y = env.goal_position
    assert first[goal_y, goal_x] == GOAL and (first == GOAL).sum() == 1


def test_reset_seed_determines_the_map():
    env = make_env()
    assert np.array_equal(env.reset(seed=7)[0]["map"], env.reset(seed=7)[0]["map"])
    assert not np.array_equal(env.reset(seed=7)[0]["map"], env.reset(seed=8)[0]["map"])


def test_training_seeds_are_apart_from_evaluation_seeds():
    seeds = training_seeds(0, 50)
    assert seeds == training_seeds(0, 50)
    assert seeds != training_seeds(1, 50)
    assert len(set(seeds)) == 50 and all(TRAINING_SEEDS_START <= s < 2**31 for s in seeds)
    assert not any(is_held_out(s) for s in seeds) and is_held_out(0) and is_held_out(99 * 10_000 + 999)
    env = make_env()
    training_maps = [env.reset(seed=s)[0]["map"] for s in seeds]
    evaluation_maps = [env.reset(seed=s)[0]["map"] for s in range(50)]
    assert not any(np.array_equal(t, e) for t in training_maps for e in evaluation_maps)


def test_expert_toggles_a_closed_door_in_front():
    env, expert = make_env(), ShortestPathExpert()
    env.reset(seed=1)
    minigrid_env = env.unwrapped
    fronts = []
    for _ in range(minigrid_env.max_steps):
        in_front = minigrid_env.grid.get(*minigrid_env.front_pos)
        if in_front is not None and in_front.type == "door" and not in_front.is_open:
            break
        observation, *_ = env.step(expert.action(env))
        fronts.append(observation["state"][3])
    else:
        pytest.fail("the expert never faced a closed door")
    assert fronts[-1] == DOOR and DOOR not in fronts[:-1]  # the state says what is in front
    action = expert.action(env)
    assert ACTIONS[action] == MINIGRID_TOGGLE
    observation, *_ = env.step(action)
    assert in_front.is_open and observation["state"][3] == EMPTY  # an open door is passable


def test_expert_turns_the_short_way_towards_the_next_cell():
    env, expert = make_env(), ShortestPathExpert()
    # A map whose goal has a free cell just south of it: from there the path is one step north.
    for seed in range(100):
        env.reset(seed=seed)
        goal_x, goal_y = env.goal_position
        if env.unwrapped.grid.get(goal_x, goal_y + 1) is None:
            break
    else:
        pytest.fail("no map with a free cell south of the goal")
    minigrid_env = env.unwrapped
    minigrid_env.agent_pos = (goal_x, goal_y + 1)
    # MiniGrid directions: 0 east, 1 south, 2 west, 3 north.
    expected = {0: MINIGRID_LEFT, 2: MINIGRID_RIGHT, 3: MINIGRID_FORWARD}
    for direction, minigrid_action in expected.items():
        minigrid_env.agent_dir = direction
        assert ACTIONS[expert.action(env)] == minigrid_action, f"facing {direction}"
    minigrid_env.agent_dir = 1  # facing away: either turn is shortest
    assert ACTIONS[expert.action(env)] in (MINIGRID_LEFT, MINIGRID_RIGHT)
    assert ACTIONS.index(MINIGRID_LEFT) == 0


def test_draw_paths_writes_identical_png_bytes(tmp_path):
    env, expert = make_env(), ShortestPathExpert()
    maps, paths, successes = [], [], []
    for seed in range(4):
        observations, info, _, _ = run_episode(env, seed, expert.action)
        maps.append(observations[0]["map"])
        paths.append(np.array([obs["state"][:2] for obs in observations]))
        successes.append(info["success"])
    maps.append(maps[0])
    paths.append(paths[0][:1])  # a single-cell path still draws
    successes.append(False)
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    draw_paths(maps, paths, successes, first)
    draw_paths(maps, paths, successes, second)
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()
