"""Evaluating a trained agent in its real environment: TT or TT+Q as a receding-horizon planner,
BC or IQL as a policy.

All episodes of an agent run together: one batched search (or one policy batch) acts for every
environment still running (they all start together, so planning contexts have the same length).
Resets and planner randomness are seeded, so a CPU rerun gives identical episodes. Per episode:
return, normalized score (D4RL's reference returns for locomotion, the dataset's own for
generated data), success for mazes (counted from `info["success"]`, never read from the return),
length. Goal-reaching tasks also record each episode's executed path (the goal dims of every
observation), its goal, and its map where the model reads one, for the report's figures.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from trajectory_transformer import antmaze
from trajectory_transformer.config import Count, Natural, parse
from trajectory_transformer.critic import OfflineAgent, load_offline_agent
from trajectory_transformer.datasets import GENERATORS, DatasetSpec, ObservationSpec, flatten_observations, normalized_score, open_dataset, reference_returns
from trajectory_transformer.discretization import Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.model import TrajectoryTransformer
from trajectory_transformer.planner import Critic, PlannerSpec, plan
from trajectory_transformer.reporting import mean_and_stderr
from trajectory_transformer.training import check_model_inputs, load_model
from trajectory_transformer.weights import resolve_device


@dataclass
class EvaluateSpec:
    """The `evaluate` section of params.yaml."""

    episodes: Count = 3  # per trained model (the paper: 3 for each of 5 models)
    seed: Natural = 0
    max_episode_steps: Count | None = None  # a cap below the environment's own limit, for CPU budgets
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: Count = 2


@dataclass
class ImitationSpec:
    """The `imitation` section of params.yaml: which datasets are also planned by likelihood
    alone, and with which search (`beam`: the paper's; `likelihood`: ours)."""

    datasets: list[str] = field(default_factory=list)
    mode: Literal["beam", "likelihood"] = "likelihood"


def make_env(spec: DatasetSpec, data_dir: Path) -> gym.Env:
    """The evaluation environment of a dataset."""
    if spec.fetch.source == "generate":
        return GENERATORS[spec.fetch.generator].make_env(spec.fetch)
    dataset = open_dataset(data_dir)
    task = antmaze.task_of(dataset.spec.env_spec) if dataset.spec.env_spec else None
    if task is not None:  # D4RL's fixed-goal task on the data's own walls, not Minari's evaluation map
        return task.make_env()
    try:
        return dataset.recover_environment(eval_env=True)
    except Exception as error:  # missing env package, unknown env id
        raise PipelineError(f"the evaluation environment of {data_dir} cannot be made ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}); install its package") from None


@dataclass
class Episode:
    seed: int
    steps: int = 0
    total: float = 0.0
    success: bool = False
    done: bool = False
    path: list = field(default_factory=list)  # goal reaching: the goal dims of every observation


class PlanningAgent:
    """TT, or TT+Q with a critic: plans from the last `context` transitions seen (as tokens)
    and the current observation, for every environment that needs a plan in one batched search;
    executes `replan_every` actions of each plan, decoded with the discretizer's reconstruction.
    A goal-conditioned model plans towards each episode's desired goal (tokenized as the goal
    dims of an observation), a map-conditioned one reads each episode's map."""

    def __init__(self, model: TrajectoryTransformer, discretizer: Discretizer, planner: PlannerSpec, seed: int,
                 device: torch.device, critic: Critic | None = None, weights: Path | None = None):
        planner.check(model, critic)
        self.model, self.discretizer, self.planner, self.critic, self.device = model, discretizer, planner, critic, device
        self.weights = weights
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.seconds, self.calls = 0.0, 0

    def reset(self, goals: list[np.ndarray | None], maps: list[np.ndarray | None]) -> None:
        config = self.model.config
        D, M = config.transition_dim, config.action_dim
        self.history = [np.zeros((0, D), dtype=np.int64) for _ in goals]
        self.queued = [np.zeros((0, M))] * len(goals)
        self.goals = self.maps = None
        if (config.goal_length and any(g is None for g in goals)) or (config.map_shape and any(m is None for m in maps)):
            raise PipelineError("this model plans towards a goal" + (" in a map" if config.map_shape else "")
                                + ": pass each episode's desired goal" + (" and map" if config.map_shape else "") + " to reset")
        if config.goal_length:
            self.goals = torch.as_tensor(self.discretizer.tokenize(np.stack(goals), config.goal_dims), device=self.device)
        if config.map_shape:
            self.maps = torch.as_tensor(np.stack(maps), device=self.device)

    def act(self, active: list[int], observations: list[np.ndarray]) -> list[np.ndarray]:
        N, M = self.model.config.observation_dim, self.model.config.action_dim
        need_plan = [i for i in active if len(self.queued[i]) == 0]
        if need_plan:
            prefix = torch.as_tensor(np.stack([
                np.concatenate([self.history[i].reshape(-1), self.discretizer.tokenize(observations[i], slice(0, N))])
                for i in need_plan
            ]), device=self.device)
            rows = torch.as_tensor(need_plan, device=self.device)
            goal = self.goals[rows] if self.goals is not None else None
            maps = self.maps[rows] if self.maps is not None else None
            start = time.perf_counter()
            result = plan(self.model, self.discretizer, self.planner, prefix, self.generator, goal=goal, critic=self.critic, maps=maps)
            decoded = self.discretizer.reconstruct(result.actions.cpu().numpy(), slice(N, N + M))
            self.seconds += time.perf_counter() - start
            self.calls += 1
            for row, i in enumerate(need_plan):
                self.queued[i] = decoded[row, : self.planner.replan_every]
        actions = []
        for i in active:
            actions.append(self.queued[i][0])
            self.queued[i] = self.queued[i][1:]
        return actions

    def observe(self, i: int, observation: np.ndarray, action: np.ndarray, reward: float) -> None:
        transition = np.concatenate([observation, action, [reward, 0.0]])
        self.history[i] = np.concatenate([self.history[i], self.discretizer.tokenize(transition)[None]])[-self.planner.context :]


class PolicyAgent:
    """BC or IQL: the policy's mean action for every running environment, in one batch (a
    goal-conditioned BC reads each episode's desired goal, a map-conditioned one its map); a
    categorical policy's most likely action, or after `draw_actions` one drawn from it."""

    def __init__(self, agent: OfflineAgent, device: torch.device, weights: Path | None = None):
        self.agent, self.device, self.weights = agent, device, weights
        self.seconds, self.calls = 0.0, 0
        self.goals = self.maps = None
        self.generator = None

    def draw_actions(self, seed: int) -> None:
        """Act by sampling the categorical policy (seeded) instead of taking its most likely action:
        greedy, an imperfect policy in a deterministic world repeats its mistake forever."""
        if not self.agent.action_choices:
            raise PipelineError("only a categorical policy draws its actions; a Gaussian acts by its mean")
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def reset(self, goals: list[np.ndarray | None], maps: list[np.ndarray | None]) -> None:
        self.goals = self.maps = None
        if (self.agent.goal_dim and any(g is None for g in goals)) or (self.agent.map_codes and any(m is None for m in maps)):
            raise PipelineError("this policy heads for a goal" + (" in a map" if self.agent.map_codes else "")
                                + ": pass each episode's desired goal" + (" and map" if self.agent.map_codes else "") + " to reset")
        if self.agent.goal_dim:
            self.goals = torch.as_tensor(np.stack(goals), dtype=torch.float32, device=self.device)
        if self.agent.map_codes:
            self.maps = torch.as_tensor(np.stack(maps), device=self.device)

    def act(self, active: list[int], observations: list[np.ndarray]) -> list[np.ndarray]:
        start = time.perf_counter()
        batch = torch.as_tensor(np.stack([observations[i] for i in active]), dtype=torch.float32, device=self.device)
        rows = torch.as_tensor(active, device=self.device)
        goals = self.goals[rows] if self.goals is not None else None
        maps = self.maps[rows] if self.maps is not None else None
        actions = list(self.agent.act(batch, goals, maps, self.generator).cpu().numpy().astype(np.float64))
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return actions

    def observe(self, i: int, observation: np.ndarray, action: np.ndarray, reward: float) -> None:
        pass


def load_batched_agent(folder: str | Path, *, plan: PlannerSpec | dict | None = None, critic: str | Path | None = None,
                       discretizer: str | Path | None = None, seed: int = 0, device: str | torch.device = "auto",
                       data: tuple[Path, str] | None = None) -> PlanningAgent | PolicyAgent:
    """The agent trained in `folder`, verified, acting for several environments at once.

    A Trajectory Transformer (`model.safetensors`) plans as `plan` says (the `plan` params;
    the published defaults if None) with the discretizer it was trained with (`discretizer`:
    its folder, by default the pipeline's `data/discretized/<dataset>/<kind>` beside `models/`)
    and, for TT+Q, the critic of an IQL agent folder. A BC or IQL agent (`agent.safetensors`)
    acts alone. `data` (a dataset folder and its SHA-256) is checked to be what everything was
    trained on; `seed` seeds the planner's sampling."""
    folder = Path(folder)
    device = resolve_device(device) if isinstance(device, str) else device
    if not (folder / "model.safetensors").exists() and not (folder / "agent.safetensors").exists():
        raise PipelineError(f"no weights at {folder} (model.safetensors of TT, agent.safetensors of IQL or BC): "
                            "run the stage that makes them (`dvc repro`) or `dvc pull`")
    if (folder / "agent.safetensors").exists():
        if plan is not None or critic is not None or discretizer is not None:
            raise PipelineError(f"{folder} holds a BC or IQL agent, which acts alone: give no plan, critic or discretizer")
        policy, metadata = load_offline_agent(folder, device)
        check_trained_on(metadata, folder, data)
        return PolicyAgent(policy, device, folder / "agent.safetensors")
    model, metadata = load_model(folder, device)
    discretizer_dir = Path(discretizer) if discretizer is not None else pipeline_discretizer(folder, metadata)
    fitted = Discretizer.load(discretizer_dir / "discretizer.json")  # verified first: a broken file gets its own error
    check_model_inputs(metadata, folder, discretizer_dir, data)
    if not isinstance(plan, PlannerSpec):
        plan = parse(PlannerSpec, plan or {}, "plan")
    scorer = None
    if critic is not None:
        scorer, critic_metadata = load_offline_agent(Path(critic), device)
        check_trained_on(critic_metadata, Path(critic), data)
        if not scorer.with_critic:
            raise PipelineError(f"{critic} holds a {critic_metadata['algorithm']} agent without a critic: "
                                "pass an IQL agent from the `critic` stage")
    return PlanningAgent(model, fitted, plan, seed, device, scorer, folder / "model.safetensors")


def pipeline_discretizer(model_dir: Path, metadata: dict) -> Path:
    """Where the pipeline keeps a model's discretizer: `<root>/data/discretized/<dataset>/<kind>`
    for a model under `<root>/models/`."""
    root = next((p.parent for p in model_dir.resolve().parents if p.name == "models"), None)
    if root is None:
        raise PipelineError(f"{model_dir} is not under a models/ folder: pass the discretizer's folder (discretizer=...)")
    return root / "data" / "discretized" / metadata["dataset"] / metadata["discretizer_kind"]


def check_trained_on(metadata: dict, folder: Path, data: tuple[Path, str] | None) -> None:
    if data is not None and metadata["dataset_sha256"] != data[1]:
        raise PipelineError(f"{folder} was trained on another dataset than {data[0]}: rerun its stage (`dvc repro`)")


class Agent:
    """One environment's agent. Call `reset()` at the start of every episode (with the episode's
    desired goal and map for goal-reaching models), then `act(observation, reward)` at every step,
    `reward` being what the environment returned with `observation` (None right after a reset):
    a Trajectory Transformer conditions on the rewards it has seen."""

    def __init__(self, agent: PlanningAgent | PolicyAgent, observation: ObservationSpec | None = None,
                 action_space: gym.Space | None = None):
        self.agent, self.observation, self.action_space = agent, observation, action_space
        self.last = None

    def reset(self, goal: np.ndarray | None = None, episode_map: np.ndarray | None = None) -> None:
        self.agent.reset([None if goal is None else np.asarray(goal, dtype=np.float64)], [episode_map])
        self.last = None

    def act(self, observation, reward: float | None = None):
        if isinstance(observation, dict) and self.observation is None:
            raise PipelineError("this observation is a dict: load the agent with observation=... (the dataset's "
                                "`observation` params, e.g. {'observation_keys': ['observation']})")
        observation = flat_observation(observation, self.observation or ObservationSpec())
        if self.last is not None:
            if reward is None:
                raise PipelineError("act: pass the reward the environment returned with this observation")
            self.agent.observe(0, *self.last, float(reward))
        action = self.agent.act([0], [observation])[0]
        env_action, action = environment_action(self.action_space, action) if self.action_space is not None else (action, action)
        self.last = (observation, action)
        return env_action


def load_agent(folder: str | Path, *, plan: PlannerSpec | dict | None = None, critic: str | Path | None = None,
               discretizer: str | Path | None = None, observation: ObservationSpec | dict | None = None,
               action_space: gym.Space | None = None, seed: int = 0, device: str = "auto",
               discrete_actions: Literal["greedy", "sample"] = "sample") -> Agent:
    """A trained TT, TT+Q (`critic`: an IQL agent's folder), IQL or BC agent for your own
    environment: what the evaluate stages run, one environment at a time. `observation`: the
    dataset's `observation` params (needed for dict observations); `action_space`: the
    environment's, to clip (or round, for discrete actions) what the agent returns.
    `discrete_actions`: how a categorical BC or IQL policy acts (the `bc.discrete_actions`
    param; drawn with `seed`, as the pipeline does by default, or its most likely action)."""
    if observation is not None and not isinstance(observation, ObservationSpec):
        observation = parse(ObservationSpec, observation, "observation")
    agent = load_batched_agent(folder, plan=plan, critic=critic, discretizer=discretizer, seed=seed, device=device)
    if isinstance(agent, PolicyAgent) and agent.agent.action_choices and discrete_actions == "sample":
        agent.draw_actions(seed)
    return Agent(agent, observation, action_space)


def evaluate(
    agent: PlanningAgent | PolicyAgent,
    dataset: DatasetSpec,
    data_dir: Path,
    spec: EvaluateSpec,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Run `spec.episodes` episodes together; returns per-episode records and timing (kept
    apart: wall times must stay out of cached outputs)."""
    reference = reference_returns(open_dataset(data_dir))
    envs = [make_env(dataset, data_dir) for _ in range(spec.episodes)]
    limit = envs[0].spec.max_episode_steps if envs[0].spec and envs[0].spec.max_episode_steps else 1000
    if spec.max_episode_steps is not None:
        limit = min(limit, spec.max_episode_steps)
    episodes = [Episode(seed=spec.seed * 10_000 + i) for i in range(spec.episodes)]
    first = [env.reset(seed=e.seed)[0] for env, e in zip(envs, episodes)]
    observations = [flat_observation(obs, dataset.observation) for obs in first]
    task = dataset.observation
    goal_reaching = task.task == "goal-reaching"
    goals = [np.asarray(obs[task.goal_key], dtype=np.float64) if goal_reaching else None for obs in first]
    maps = [np.asarray(obs[task.map_key]) if task.map_key else None for obs in first]
    agent.reset(goals, maps)
    bar = tqdm(total=limit, desc="evaluate", unit="step", disable=not progress, mininterval=2)

    for episode, observation in zip(episodes, observations):
        if goal_reaching:
            episode.path.append(observation[task.goal_dims].tolist())
    for _ in range(limit):
        active = [i for i, e in enumerate(episodes) if not e.done]
        if not active:
            break
        for i, action in zip(active, agent.act(active, observations)):
            env_action, action = environment_action(envs[i].action_space, action)
            obs, reward, terminated, truncated, info = envs[i].step(env_action)
            agent.observe(i, observations[i], action, reward)
            observations[i] = flat_observation(obs, dataset.observation)
            episode = episodes[i]
            episode.steps += 1
            episode.total += float(reward)
            episode.success |= bool(info.get("success", False))
            episode.done = terminated or truncated or episode.steps >= limit
            if goal_reaching:
                episode.path.append(observations[i][task.goal_dims].tolist())
        bar.update(1)
    bar.close()
    records = [{
        "seed": e.seed,
        "return": e.total,
        "normalized_score": float(normalized_score(e.total, reference)),
        "success": e.success,
        "length": e.steps,
    } for e in episodes]
    if goal_reaching:
        for record, episode, goal, episode_map in zip(records, episodes, goals, maps):
            record.update(path=episode.path, goal=goal.tolist())
            if episode_map is not None:
                record["map"] = episode_map.tolist()
    timing = {"calls": agent.calls, "seconds": agent.seconds, "seconds_per_call": agent.seconds / max(agent.calls, 1)}
    return records, timing


def environment_action(space: gym.Space, action: np.ndarray) -> tuple:
    """(what the env takes, the action as the model sees it): a Box action clipped to its bounds;
    a Discrete one rounded to the nearest valid index, and recorded as that index."""
    if isinstance(space, gym.spaces.Discrete):
        index = int(np.clip(np.rint(action[0]), 0, space.n - 1))
        return index, np.array([index], dtype=np.float64)
    return np.clip(action, space.low, space.high).astype(space.dtype), action


def flat_observation(observation, spec: ObservationSpec) -> np.ndarray:
    if isinstance(observation, dict):
        observation = {k: np.asarray(v)[None] for k, v in observation.items()}
    else:
        observation = np.asarray(observation)[None]
    return flatten_observations(observation, spec, "evaluation")[0].astype(np.float64)


def summarize(records: list[dict]) -> dict:
    """Mean and standard error over episodes: what `dvc exp show` lists."""
    score, stderr = mean_and_stderr([r["normalized_score"] for r in records])
    return {
        "episodes": len(records),
        "normalized_score": score,
        "normalized_score_stderr": stderr,
        "return": float(np.mean([r["return"] for r in records])),
        "success_rate": float(np.mean([r["success"] for r in records])),
        "successes": int(sum(r["success"] for r in records)),
        "length": float(np.mean([r["length"] for r in records])),
    }
