"""Datasets: download from Minari, generate offline in Minari format, and load as flat arrays.

A dataset folder is a Minari dataset root (`data/metadata.json`, `data/main_data.hdf5`), so
`minari.MinariDataset(folder / "data")` reads it and so does every tool that reads Minari.
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector.callbacks import StepDataCallback
from minari.utils import parse_dataset_id
from tqdm import tqdm

from trajectory_transformer import antmaze, behavior, gridworld, mazes
from trajectory_transformer.artifacts import write_manifest
from trajectory_transformer.config import Count, Natural, NonNegative, Probability
from trajectory_transformer.errors import PipelineError

QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")
ZERO_ACTION_KEY = "zero_action_return"  # dataset metadata: the reference episodes' return of all-zero actions

# D4RL's reference returns (random, expert); the Minari locomotion datasets carry none.
D4RL_REFERENCE_RETURNS = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


@dataclass
class FetchSpec:
    """Where a dataset comes from: `datasets.<name>.fetch` in params.yaml."""

    source: Literal["minari", "generate"]
    # minari: one id, or several to combine (medium-expert = medium + expert, as D4RL built it)
    minari_id: str | list[str] | None = None
    # generate
    generator: Literal["pointmaze", "pointmaze-goals", "reacher", "pendulum", "minigrid"] | None = None
    maze: str | None = None
    quality: str | None = None
    transitions: Count | None = None  # pointmaze: length of the one continuing run
    episodes: Count | None = None  # reacher, pendulum: episodes per quality; pointmaze-goals, minigrid: episodes
    episode_steps: Count | None = None  # reacher, pendulum: a time limit below the env's own (data and evaluation)
    random_action_probability: Probability = 0.25  # minigrid: each step acts uniformly at random with this probability
    # pointmaze, pointmaze-goals: std of the Gaussian noise on the expert's actions (0.5: Minari's
    # PointMaze recipe; the paper's four-rooms data came from a trained goal-reaching agent)
    action_noise: NonNegative = 0.5
    reference_episodes: Count = 50  # episodes of the random and expert policies for ref scores
    seed: Natural = 0

    def check(self, where: str) -> None:
        if self.source == "minari":
            need(self, "minari_id", where, "name a Minari dataset id, e.g. mujoco/hopper/medium-v0")
            for dataset_id in np.atleast_1d(self.minari_id):
                check_minari_id(str(dataset_id))
            return
        need(self, "generator", where, f"choose one of {', '.join(GENERATORS)}")
        GENERATORS[self.generator].check(self, where)
        for field in ("transitions", "episodes", "reference_episodes"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise PipelineError(f"params {where}.{field} must be at least 1, got {value}")


def check_minari_id(dataset_id: str) -> None:
    """Ids without a namespace and version cannot name a remote Minari dataset."""
    try:
        namespace, _, _ = parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # malformed, or no version (Minari's parser fails on int(None))
        namespace = None
    if namespace is None:
        raise PipelineError(
            f"unknown dataset id '{dataset_id}': Minari ids look like mujoco/hopper/medium-v0 "
            "or D4RL/antmaze/umaze-v1 (see `minari list remote`)"
        )


@contextlib.contextmanager
def minari_root(path: Path):
    """Point Minari's dataset root at `path` for the duration of the block."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(path).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def fetch(spec: FetchSpec, name: str, out_dir: Path) -> None:
    """Write dataset `name` to `out_dir` atomically: on failure nothing is left behind."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    local_root = minari.storage.get_dataset_path()  # the user's Minari root, before the scratch one
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as scratch:
        scratch = Path(scratch)
        with minari_root(scratch / "minari"):
            if spec.source == "minari":
                built = download(spec.minari_id, name, local_root)
            else:
                built = GENERATORS[spec.generator].generate(spec, name)
        write_manifest(built)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(built, out_dir)


def local_id(name: str) -> str:
    return f"pipeline/{name}-v0"


def download(minari_ids: str | list[str], name: str, local_root: Path) -> Path:
    """Each id from the local Minari root `local_root` if it holds it (no server contacted:
    compute nodes without network), else downloaded; several ids are combined."""
    ids = [minari_ids] if isinstance(minari_ids, str) else list(minari_ids)
    for dataset_id in ids:
        local = Path(local_root) / dataset_id
        if (local / "data" / "metadata.json").exists():
            shutil.copytree(local, minari.storage.get_dataset_path(dataset_id))
            check_minari_records(dataset_id)
            continue
        try:
            minari.download_dataset(dataset_id)
            check_minari_records(dataset_id)
        except PipelineError:
            raise
        except Exception as error:
            raise PipelineError(
                f"dataset {dataset_id} is not in the local Minari root {local_root} (MINARI_DATASETS_PATH) and could not "
                f"be downloaded ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}); "
                "download it there on a machine with network (`minari download " + dataset_id + "`), `dvc pull` it "
                "from the project's remote, or run the offline suite: dvc exp run -S suite=offline"
            ) from None
    if len(ids) == 1:
        return minari.storage.get_dataset_path(ids[0])
    return combine([minari.load_dataset(i) for i in ids], name)


def check_minari_records(dataset_id: str) -> None:
    """A Minari dataset holds the episodes, steps and megabytes its metadata records (a
    truncated download or copy does not)."""
    dataset = minari.load_dataset(dataset_id)
    metadata = dataset.storage.metadata
    episodes = list(dataset.iterate_episodes())
    found = {"total_episodes": len(episodes), "total_steps": sum(len(e.actions) for e in episodes),
             "dataset_size": dataset.storage.get_size()}
    # the size is in MB rounded to 0.1, measured before Minari added it to its own metadata file
    tolerance = {"dataset_size": max(0.2, 0.01 * float(metadata.get("dataset_size") or 0))}
    wrong = [key for key, value in found.items() if key in metadata and abs(metadata[key] - value) > tolerance.get(key, 0)]
    if wrong:
        raise PipelineError(f"Minari dataset {dataset_id} holds {wrong[0]} {found[wrong[0]]} where its metadata records "
                            f"{metadata[wrong[0]]}: the copy is incomplete; delete it from the Minari root and download it again")


def combine(datasets: list, name: str) -> Path:
    """One dataset from several (D4RL's medium-expert), keeping their shared reference returns."""
    minari.storage.get_dataset_path(local_id(name)).parent.mkdir(parents=True, exist_ok=True)  # Minari makes no namespace folder
    combined = minari.combine_datasets(datasets, local_id(name))
    references = {k: datasets[0].storage.metadata.get(k) for k in ("ref_min_score", "ref_max_score", ZERO_ACTION_KEY)}
    if all(d.storage.metadata.get(k) == v for d in datasets for k, v in references.items()):
        combined.storage.update_metadata({k: v for k, v in references.items() if v is not None})
    return minari.storage.get_dataset_path(local_id(name))


def split_at_success(evaluation_goal: np.ndarray) -> type[StepDataCallback]:
    """A Minari step callback: one continuing PointMaze run, cut into an episode at each success
    (published system §7), with rewards relabeled for the fixed evaluation goal (the D4RL
    maze2d/AntMaze task): the data head for random goals, so imitating them does not solve the
    evaluation task."""

    class SplitAtSuccess(StepDataCallback):
        def __call__(self, env, obs, info, action=None, rew=None, terminated=None, truncated=None):
            step = super().__call__(env, obs, info, action, rew, terminated, truncated)
            if action is not None:
                step["reward"] = float(mazes.goal_reached(obs["achieved_goal"], evaluation_goal))
                step["truncated"] = bool(truncated or info["success"])
            return step

    return SplitAtSuccess


def generate_pointmaze(spec: FetchSpec, name: str) -> Path:
    rng = np.random.default_rng(spec.seed)
    goal = mazes.evaluation_goal(spec.maze)
    env = mazes.make_env(spec.maze, reset_target=True, max_episode_steps=spec.transitions)
    collector = minari.DataCollector(env, step_data_callback=split_at_success(goal))
    expert = mazes.WaypointExpert(env.unwrapped, mazes.LAYOUTS[spec.maze], rng)
    obs, _ = collector.reset(seed=int(rng.integers(2**31)))
    for _ in tqdm(range(spec.transitions), desc=f"generate {name}", unit="step", mininterval=2):
        state = obs["observation"]
        action = expert.action(state[:2], state[2:], obs["desired_goal"])
        action = np.clip(action + rng.normal(0.0, spec.action_noise, size=2), -1.0, 1.0).astype(np.float32)
        obs, *_ = collector.step(action)
    low, high = pointmaze_reference_returns(spec.maze, spec.reference_episodes)
    return create_dataset(
        collector,
        name,
        eval_env=mazes.make_evaluation_env(spec.maze).env.spec,
        algorithm_name=f"waypoint expert: Q-iteration on cells, PD 10/1, N(0, {spec.action_noise:g}^2) action noise",
        description=(
            f"PointMaze {spec.maze}: one continuing run of {spec.transitions} steps cut at each "
            f"success; rewards relabeled for the fixed evaluation goal {goal.tolist()} "
            f"(cell {mazes.EVALUATION_CELLS[spec.maze]['goal_cell']})"
        ),
        ref_min_score=low,
        ref_max_score=high,
    )


def generate_pointmaze_goals(spec: FetchSpec, name: str) -> Path:
    """Goal reaching (the paper's Figure 6): each episode starts in a free cell and heads for a
    goal cell, the pair drawn uniformly from the pairs not held out for evaluation; it ends when
    the goal is reached (or at the step limit). The expert is the pointmaze recipe's."""
    rng = np.random.default_rng(spec.seed)
    training_pairs = mazes.start_goal_pairs(spec.maze)[0]
    collector = minari.DataCollector(mazes.make_env(spec.maze, reset_target=False, continuing=False))
    for _ in tqdm(range(spec.episodes), desc=f"generate {name}", unit="episode", mininterval=2):
        start, goal = training_pairs[rng.integers(len(training_pairs))]
        obs, _ = collector.reset(seed=int(rng.integers(2**31)), options={"reset_cell": start, "goal_cell": goal})
        expert = mazes.WaypointExpert(collector.env.unwrapped, mazes.LAYOUTS[spec.maze], rng)
        done = False
        while not done:
            state = obs["observation"]
            action = expert.action(state[:2], state[2:], obs["desired_goal"])
            action = np.clip(action + rng.normal(0.0, spec.action_noise, size=2), -1.0, 1.0).astype(np.float32)
            obs, _, terminated, truncated, _ = collector.step(action)
            done = terminated or truncated
    def expert(env, rng):
        controller = mazes.WaypointExpert(env.unwrapped, mazes.LAYOUTS[spec.maze], rng)
        return lambda obs: np.clip(controller.action(obs["observation"][:2], obs["observation"][2:], obs["desired_goal"]), -1, 1)

    # on the evaluation task itself: reference episode i runs held-out pair i
    low, high = reference_policy_returns(lambda: mazes.make_evaluation_env(spec.maze), expert, spec.reference_episodes)
    return create_dataset(
        collector,
        name,
        eval_env=None,
        algorithm_name=f"waypoint expert: Q-iteration on cells, PD 10/1, N(0, {spec.action_noise:g}^2) action noise",
        description=(f"PointMaze {spec.maze}: {spec.episodes} episodes from a start cell to a goal cell, the pair drawn "
                     f"uniformly from all pairs of free cells but {mazes.HELD_OUT_PAIRS} held out for evaluation"),
        ref_min_score=low,
        ref_max_score=high,
    )


def generate_minigrid(spec: FetchSpec, name: str) -> Path:
    """MiniGrid MultiRoom (the paper's appendix F): episodes on maps of training seeds only, each
    step the shortest-path expert's action, or with `random_action_probability` a uniformly random
    one: a mixture of a goal-reaching expert and a random policy."""
    rng = np.random.default_rng(spec.seed)
    collector = minari.DataCollector(gridworld.make_env())
    for reset_seed in tqdm(gridworld.training_seeds(spec.seed, spec.episodes), desc=f"generate {name}", unit="episode", mininterval=2):
        collector.reset(seed=reset_seed)
        expert, done = gridworld.ShortestPathExpert(), False
        while not done:
            if rng.uniform() < spec.random_action_probability:
                action = int(rng.integers(len(gridworld.ACTIONS)))
            else:
                action = expert.action(collector.env)
            _, _, terminated, truncated, _ = collector.step(action)
            done = terminated or truncated

    def expert(env, rng):
        controller = gridworld.ShortestPathExpert()
        return lambda obs: controller.action(env)

    # on the evaluation task itself: reference episode i runs on the held-out map of seed i
    low, high = reference_policy_returns(gridworld.make_env, expert, spec.reference_episodes,
                                         random_action=lambda rng, env: int(rng.integers(env.action_space.n)))
    return create_dataset(
        collector,
        name,
        eval_env=None,
        algorithm_name=f"shortest-path expert over the full grid, uniformly random actions with probability {spec.random_action_probability}",
        description=f"{gridworld.ENV_ID}: {spec.episodes} episodes on maps of training seeds (>= {gridworld.TRAINING_SEEDS_START})",
        ref_min_score=low,
        ref_max_score=high,
    )


def pointmaze_reference_returns(maze: str, episodes: int) -> tuple[float, float]:
    """Mean evaluation-task return of uniform random actions and of the noise-free expert."""

    def expert(env, rng):
        controller = mazes.WaypointExpert(env.unwrapped, mazes.LAYOUTS[maze], rng)
        return lambda obs: np.clip(controller.action(obs["observation"][:2], obs["observation"][2:], env.evaluation_goal), -1, 1)

    return reference_policy_returns(lambda: mazes.make_evaluation_env(maze), expert, episodes)


def reference_policy_returns(make_env, make_expert, episodes: int, random_action=None) -> tuple[float, float]:
    """(random, expert) mean returns over `episodes` seeded episodes. Seeded apart from the data
    (reference episode i resets with seed i), so every dataset of a task shares them.
    `random_action(rng, env)` for action spaces that are not [-1, 1] boxes."""
    if random_action is None:
        random_action = lambda rng, env: behavior.uniform_random_action(rng, env.action_space.shape[0])  # noqa: E731
    random = policy_return(make_env, lambda env, rng: lambda _: random_action(rng, env), episodes)
    return random, policy_return(make_env, make_expert, episodes)


def policy_return(make_env, make_policy, episodes: int) -> float:
    """Mean return of `make_policy(env, rng)` (a fresh one per episode) over the reference episodes."""
    env, rng, returns = make_env(), np.random.default_rng(episodes), []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        act, total, done = make_policy(env, rng), 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


@dataclass(frozen=True)
class ControlTask:
    """A MuJoCo task whose data come from scripted controllers of graded quality (behavior.py)."""

    env_id: str
    behavior: Callable[[str, np.random.Generator], Callable[[np.ndarray], np.ndarray]]  # (quality, rng) -> policy
    expert: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # the reference expert, noise-free
    algorithm: str

    def make_env(self, spec: FetchSpec) -> gym.Env:
        return gym.make(self.env_id, **({} if spec.episode_steps is None else {"max_episode_steps": spec.episode_steps}))


CONTROL_TASKS = {
    "reacher": ControlTask("Reacher-v5", behavior.ReacherBehavior, behavior.REACHER_EXPERT,
                           "scripted Jacobian-transpose PD controller"),
    "pendulum": ControlTask("InvertedDoublePendulum-v5", behavior.PendulumBehavior, behavior.PENDULUM_EXPERT,
                            "scripted LQR controller"),
}


def generate_controlled(spec: FetchSpec, name: str) -> Path:
    if spec.quality == "medium-expert":
        parts = []
        for offset, quality in enumerate(("medium", "expert")):
            part = dataclasses.replace(spec, quality=quality, seed=spec.seed * 2 + offset)
            parts.append(minari.MinariDataset(generate_controlled(part, f"{name}-{quality}") / "data"))
        return combine(parts, name)
    task, rng = CONTROL_TASKS[spec.generator], np.random.default_rng(spec.seed)
    collector = minari.DataCollector(task.make_env(spec))
    for _ in tqdm(range(spec.episodes), desc=f"generate {name}", unit="episode", mininterval=2):
        obs, _ = collector.reset(seed=int(rng.integers(2**31)))
        policy = task.behavior(spec.quality, rng)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = collector.step(policy(obs).astype(np.float32))
            done = terminated or truncated
    make_env = lambda: task.make_env(spec)  # noqa: E731
    low, high = reference_policy_returns(make_env, lambda env, rng: lambda obs: task.expert(obs, rng), spec.reference_episodes)
    folder = create_dataset(
        collector,
        name,
        eval_env=None,
        algorithm_name=f"{task.algorithm}, quality {spec.quality}",
        description=f"{task.env_id}, {spec.episodes} episodes of the '{spec.quality}' behavior policy",
        ref_min_score=low,
        ref_max_score=high,
    )
    # Doing nothing sets the floor a method must clear to have learned anything (Reacher: no control cost)
    zero_action = np.zeros(make_env().action_space.shape)
    zero = policy_return(make_env, lambda env, rng: lambda _: zero_action, spec.reference_episodes)
    minari.MinariDataset(folder / "data").storage.update_metadata({ZERO_ACTION_KEY: zero})
    return folder


def check_pointmaze(spec: FetchSpec, where: str) -> None:
    need(spec, "maze", where, f"choose one of {sorted(mazes.EVALUATION_CELLS)}")
    mazes.check_maze(spec.maze)
    if spec.maze not in mazes.EVALUATION_CELLS:
        raise PipelineError(f"params {where}.maze: '{spec.maze}' has no fixed evaluation goal: choose one of "
                            f"{sorted(mazes.EVALUATION_CELLS)}, or generator pointmaze-goals for goal reaching")
    need(spec, "transitions", where, "set the number of environment steps to generate")


def check_pointmaze_goals(spec: FetchSpec, where: str) -> None:
    need(spec, "maze", where, f"choose one of {list(mazes.GOAL_REACHING_MAZES)}")
    if spec.maze not in mazes.GOAL_REACHING_MAZES:
        raise PipelineError(f"params {where}.maze: goal-reaching data need one of {list(mazes.GOAL_REACHING_MAZES)}, got '{spec.maze}'")
    need(spec, "episodes", where, "set the number of episodes to generate")


def check_minigrid(spec: FetchSpec, where: str) -> None:
    need(spec, "episodes", where, "set the number of episodes to generate")


def check_controlled(spec: FetchSpec, where: str) -> None:
    need(spec, "quality", where, f"choose one of {', '.join(QUALITIES)}")
    if spec.quality not in QUALITIES:
        raise PipelineError(f"params {where}.quality: unknown quality '{spec.quality}', choose one of {', '.join(QUALITIES)}")
    need(spec, "episodes", where, "set the number of episodes to generate")


def need(spec: FetchSpec, field: str, where: str, why: str) -> None:
    if getattr(spec, field) is None:
        raise PipelineError(f"params {where}.{field} is missing: {why}")


@dataclass(frozen=True)
class GeneratorKind:
    """Everything the pipeline does differently for one generator of its own data."""

    check: Callable[[FetchSpec, str], None]  # its params
    generate: Callable[[FetchSpec, str], Path]  # the Minari dataset it writes
    make_env: Callable[[FetchSpec], gym.Env]  # its evaluation environment
    detail: Callable[[FetchSpec], str]  # what the report names beside the generator
    fixed_goal_maze: bool = False  # D4RL's maze task (a fixed goal not observed): the report's Table 2
    draw_paths: Callable[[FetchSpec, list[dict], Path], None] | None = None  # goal reaching: Figure 6 from episodes


def draw_maze_paths(spec: FetchSpec, episodes: list[dict], out: Path) -> None:
    mazes.draw_paths(spec.maze, episodes, out)


def draw_minigrid_paths(spec: FetchSpec, episodes: list[dict], out: Path) -> None:
    gridworld.draw_paths([np.array(e["map"]) for e in episodes], [np.array(e["path"]) for e in episodes],
                         [e["success"] for e in episodes], out)


GENERATORS = {
    "pointmaze": GeneratorKind(check_pointmaze, generate_pointmaze,
                               lambda spec: mazes.make_evaluation_env(spec.maze), lambda spec: spec.maze, fixed_goal_maze=True),
    "pointmaze-goals": GeneratorKind(check_pointmaze_goals, generate_pointmaze_goals,
                                     lambda spec: mazes.make_evaluation_env(spec.maze), lambda spec: spec.maze,
                                     draw_paths=draw_maze_paths),
    **{name: GeneratorKind(check_controlled, generate_controlled, task.make_env, lambda spec: spec.quality)
       for name, task in CONTROL_TASKS.items()},
    "minigrid": GeneratorKind(check_minigrid, generate_minigrid,
                              lambda spec: gridworld.make_env(), lambda spec: gridworld.ENV_ID, draw_paths=draw_minigrid_paths),
}


def create_dataset(collector, name: str, **metadata) -> Path:
    """Write the collected episodes as Minari dataset `name`; returns its folder."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is set to None", category=UserWarning)
        collector.create_dataset(
            dataset_id=local_id(name),
            author="trajectory-transformer-pipeline",
            code_permalink="trajectory_transformer/datasets.py",
            **metadata,
        )
    collector.close()
    return minari.storage.get_dataset_path(local_id(name))


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Transitions:
    """All steps of a dataset, flat, in episode order (D4RL's layout)."""

    observations: np.ndarray  # (T, N) float32
    actions: np.ndarray  # (T, M) float32
    rewards: np.ndarray  # (T,) float32
    terminals: np.ndarray  # (T,) bool: a true end of the task
    timeouts: np.ndarray  # (T,) bool: an episode cut without a terminal
    successes: np.ndarray | None = None  # (T,) bool: terminals that reach the task's goal (they keep their reward)
    maps: np.ndarray | None = None  # (T, H, W) uint8 map images given to the model as context (MiniGrid)
    next_observations: np.ndarray | None = None  # (T, N) the observation after each step: goal reaching's goals


@dataclass
class ObservationSpec:
    """How a dataset's observations become one flat vector, and which reward the task uses.

    `task: offline-rl` keeps the dataset's rewards; `task: fixed-goal` (AntMaze: D4RL's task of
    Table 2) relabels rewards and terminals for the maze's fixed evaluation goal (`antmaze`), the
    data's own rewards being for goals the observation does not hold; `task: goal-conditioned` recomputes the sparse
    reward for each episode's own desired goal; `task: goal-reaching` (the paper's section 4.2)
    trains the goal-conditioned model: the `goal_dims` of the state each path ends in sit first in
    every sequence, and at evaluation the planner conditions on the observation's `goal_key`
    instead. Dict observations are flattened by concatenating `observation_keys` in the listed
    order (PointMaze offline-RL: [observation]; goal-conditioned: [observation, desired_goal];
    AntMaze: [achieved_goal, observation], since its `observation` lacks the x-y position).
    `observation_dims` keeps the first N dims (ant: 27). `map_key` names an image observation
    (MiniGrid's map) that the model reads as context through a small CNN.
    """

    task: Literal["offline-rl", "fixed-goal", "goal-conditioned", "goal-reaching"] = "offline-rl"
    observation_keys: list[str] | None = None
    observation_dims: Count | None = None
    goal_dims: list[Natural] | None = None  # goal-reaching: dims of the flat observation that make the goal
    goal_key: str | None = None  # goal-reaching: the observation key with the desired goal at evaluation
    map_key: str | None = None

    def check(self, where: str) -> None:
        if self.task == "goal-reaching" and (not self.goal_dims or self.goal_key is None):
            raise PipelineError(f"params {where}: a goal-reaching task needs goal_dims (the goal's dims of the "
                                "observation) and goal_key (the observation key with the desired goal)")


@dataclass
class DatasetSequenceSpec:
    """`datasets.<name>.sequence`: what of the shared `sequence` section this dataset's model
    sets for itself. Every dataset carries the mapping (`{}` when it sets nothing), so that the
    train stage can list it as a parameter and retrain only that dataset when it changes."""

    window: Count | None = None  # transitions per training window, instead of `sequence.window`


@dataclass
class DatasetSpec:
    """One entry of `datasets` in params.yaml: where the data come from and how they are read."""

    fetch: FetchSpec
    observation: ObservationSpec = dataclasses.field(default_factory=ObservationSpec)
    sequence: DatasetSequenceSpec = dataclasses.field(default_factory=DatasetSequenceSpec)
    plan: dict = dataclasses.field(default_factory=dict)  # overrides of `plan` for this dataset (the paper's per-dataset settings)


def open_dataset(folder: Path) -> "minari.MinariDataset":
    path = Path(folder) / "data"
    if not (path / "metadata.json").exists():
        raise PipelineError(f"no dataset at {folder}: run `dvc repro` for its fetch stage, or `dvc pull`")
    return minari.MinariDataset(path)


def reference_returns(dataset) -> tuple[float, float, str]:
    """(random, expert, where they come from). D4RL's constants for its locomotion envs and
    AntMaze whatever the dataset records (the paper's tables are normalized with them; later
    Minari versions add scores of their own, and Minari's AntMaze scores count steps at the goal
    of a continuing env), else the dataset's own."""
    env_spec = dataset.spec.env_spec
    env_name = env_spec.id.split("-")[0].lower() if env_spec else ""
    if env_name in D4RL_REFERENCE_RETURNS:
        return (*D4RL_REFERENCE_RETURNS[env_name], f"D4RL {env_name}")
    if env_spec and antmaze.task_of(env_spec) is not None:  # an evaluation episode scores 1 at the goal
        return 0.0, 1.0, "D4RL antmaze"
    metadata = dataset.storage.metadata
    if metadata.get("ref_min_score") is not None and metadata.get("ref_max_score") is not None:
        return float(metadata["ref_min_score"]), float(metadata["ref_max_score"]), "dataset metadata"
    raise PipelineError(f"dataset {dataset.spec.dataset_id} has no reference returns and none are known for its env")


def normalized_score(returns, reference: tuple) -> np.ndarray:
    """100 (return - random) / (expert - random), as D4RL reports it."""
    low, high = reference[:2]
    return 100.0 * (np.asarray(returns, dtype=np.float64) - low) / (high - low)


def flatten_observations(observations, spec: ObservationSpec, where: str) -> np.ndarray:
    if isinstance(observations, dict):
        keys = spec.observation_keys
        if not keys:
            raise PipelineError(f"{where}: dict observations need observation_keys, choose from {sorted(observations)}")
        missing = [k for k in keys if k not in observations]
        if missing:
            raise PipelineError(f"{where}: observation key '{missing[0]}' not in the dataset, choose from {sorted(observations)}")
        flat = np.concatenate([np.asarray(observations[k]).reshape(len(observations[k]), -1) for k in keys], axis=1)
    else:
        flat = np.asarray(observations).reshape(len(observations), -1)
    if spec.observation_dims is not None:
        flat = flat[:, : spec.observation_dims]
    return flat.astype(np.float32)


def load_transitions(folder: Path, spec: ObservationSpec, where: str = "dataset") -> Transitions:
    dataset = open_dataset(folder)
    spec.check(where)
    if spec.task == "goal-conditioned" and "desired_goal" not in (spec.observation_keys or []):
        raise PipelineError(f"{where}: a goal-conditioned task needs desired_goal in observation_keys")
    task = antmaze.task_of(dataset.spec.env_spec) if dataset.spec.env_spec else None
    if task is not None and spec.task != "fixed-goal":
        raise PipelineError(f"params {where}.observation.task: AntMaze rewards are for each episode's own goal, which the "
                            "observation does not hold: set task fixed-goal (D4RL's task: rewards for one fixed goal)")
    if task is None and spec.task == "fixed-goal":
        raise PipelineError(f"params {where}.observation.task: fixed-goal relabels AntMaze data only; use offline-rl")
    parts = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "successes", "maps", "next_observations")}
    for episode in dataset.iterate_episodes():
        observations = episode.observations
        rewards = np.asarray(episode.rewards, dtype=np.float32)
        terminals = np.asarray(episode.terminations, dtype=bool)
        if spec.task == "goal-conditioned":
            # The row that starts a continuing run's next episode still carries the previous goal
            # (the env moves the goal after building it): the episode's goal is its last row's.
            goal = np.asarray(observations["desired_goal"][-1])
            observations = {**observations, "desired_goal": np.broadcast_to(goal, observations["desired_goal"].shape)}
            rewards = mazes.goal_reached(observations["achieved_goal"][1:], goal).astype(np.float32)
        if task is not None:  # D4RL: reward 1 and a terminal wherever the next position is at the goal
            rewards = task.rewards(observations["achieved_goal"][1:])
            terminals = rewards > 0
        steps = len(episode.actions)
        timeouts = np.asarray(episode.truncations, dtype=bool) & ~terminals
        timeouts[-1] |= not terminals[-1]  # every episode ends: an unmarked end is a time-out
        flat = flatten_observations(observations, spec, where)
        parts["observations"].append(flat[:steps])
        if spec.task == "goal-reaching":  # Minari keeps the observation after the last step too
            parts["next_observations"].append(flat[1 : steps + 1])
        parts["actions"].append(np.asarray(episode.actions, dtype=np.float32).reshape(steps, -1))
        parts["rewards"].append(rewards)
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
        parts["successes"].append(terminals & (task is not None))
        if spec.map_key is not None:
            if not isinstance(observations, dict) or spec.map_key not in observations:
                raise PipelineError(f"{where}: map_key '{spec.map_key}' is not an observation key of the dataset at {folder}")
            parts["maps"].append(np.asarray(observations[spec.map_key][:steps], dtype=np.uint8))
    if not parts["actions"]:
        raise PipelineError(f"{where}: the dataset at {folder} holds no episodes")
    return Transitions(**{k: np.concatenate(v) if v else None for k, v in parts.items()})


def summary(folder: Path) -> dict:
    """Size and quality of a dataset as its behavior policy logged it (metrics for `fetch`)."""
    dataset = open_dataset(folder)
    returns = [float(np.sum(episode.rewards)) for episode in dataset.iterate_episodes()]
    reference = reference_returns(dataset)
    zero = dataset.storage.metadata.get(ZERO_ACTION_KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "episodes": len(returns),
            "transitions": int(dataset.total_steps),
            "mean_return": float(np.mean(returns)),
            "normalized_score": float(normalized_score(np.mean(returns), reference)),
            "reference_random_return": reference[0],
            "reference_expert_return": reference[1],
            "reference_source": reference[2],
            **({} if zero is None else {"zero_action_return": float(zero),
                                        "zero_action_normalized_score": float(normalized_score(zero, reference))}),
        }
