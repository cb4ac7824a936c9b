"""Evaluating a trained model as a receding-horizon planner in its real environment.

All episodes of a model run together: one batched search plans for every environment still
running (they all start together, so their contexts have the same length). Resets and planner
randomness are seeded, so a CPU rerun gives identical episodes. Per episode: return, normalized
score (D4RL's reference returns for locomotion, the dataset's own for generated data), success
for mazes (counted from `info["success"]`, never read from the return), length.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from trajectory_transformer import mazes
from trajectory_transformer.datasets import DatasetSpec, flatten_observations, normalized_score, open_dataset, reference_returns
from trajectory_transformer.discretization import Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.model import TrajectoryTransformer
from trajectory_transformer.planner import PlannerSpec, plan
from trajectory_transformer.reporting import mean_and_stderr


@dataclass
class EvaluateSpec:
    """The `evaluate` section of params.yaml."""

    episodes: int = 3  # per trained model (the paper: 3 for each of 5 models)
    seed: int = 0
    max_episode_steps: int | None = None  # a cap below the environment's own limit, for CPU budgets
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int = 2


def make_env(spec: DatasetSpec, data_dir: Path) -> gym.Env:
    """The evaluation environment of a dataset."""
    fetch = spec.fetch
    if fetch.source == "generate" and fetch.generator == "pointmaze":
        return mazes.make_evaluation_env(fetch.maze)
    if fetch.source == "generate":
        return gym.make("Reacher-v5")
    try:
        return open_dataset(data_dir).recover_environment(eval_env=True)
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


def evaluate(
    model: TrajectoryTransformer,
    discretizer: Discretizer,
    dataset: DatasetSpec,
    data_dir: Path,
    planner: PlannerSpec,
    spec: EvaluateSpec,
    model_seed: int,
    device: torch.device,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Run `spec.episodes` episodes; returns per-episode records and timing (kept apart: wall
    times must stay out of cached outputs)."""
    planner.check(model)
    config = model.config
    N, M, D = config.observation_dim, config.action_dim, config.transition_dim
    reference = reference_returns(open_dataset(data_dir))
    envs = [make_env(dataset, data_dir) for _ in range(spec.episodes)]
    limit = envs[0].spec.max_episode_steps if envs[0].spec and envs[0].spec.max_episode_steps else 1000
    if spec.max_episode_steps is not None:
        limit = min(limit, spec.max_episode_steps)
    episodes = [Episode(seed=spec.seed * 10_000 + i) for i in range(spec.episodes)]
    observations = [flat_observation(env.reset(seed=e.seed)[0], dataset) for env, e in zip(envs, episodes)]
    history = [np.zeros((0, D), dtype=np.int64) for _ in envs]  # context transitions as tokens
    generator = torch.Generator(device=device).manual_seed(model_seed * 7919 + spec.seed)
    planning_seconds, calls = 0.0, 0
    queued: list[np.ndarray] = [np.zeros((0, M))] * len(envs)
    bar = tqdm(total=limit, desc="evaluate", unit="step", disable=not progress, mininterval=2)

    for _ in range(limit):
        active = [i for i, e in enumerate(episodes) if not e.done]
        if not active:
            break
        need_plan = [i for i in active if len(queued[i]) == 0]
        if need_plan:
            prefix = torch.as_tensor(np.stack([
                np.concatenate([history[i].reshape(-1), discretizer.tokenize(observations[i], slice(0, N))])
                for i in need_plan
            ]), device=device)
            start = time.perf_counter()
            result = plan(model, discretizer, planner, prefix, generator)
            planning_seconds += time.perf_counter() - start
            calls += 1
            decoded = discretizer.reconstruct(result.actions.cpu().numpy(), slice(N, N + M))
            for row, i in enumerate(need_plan):
                queued[i] = decoded[row, : planner.replan_every]
        for i in active:
            action, queued[i] = queued[i][0], queued[i][1:]
            env_action = np.clip(action, envs[i].action_space.low, envs[i].action_space.high).astype(envs[i].action_space.dtype)
            obs, reward, terminated, truncated, info = envs[i].step(env_action)
            transition = np.concatenate([observations[i], action, [reward, 0.0]])
            history[i] = np.concatenate([history[i], discretizer.tokenize(transition)[None]])[-planner.context :]
            observations[i] = flat_observation(obs, dataset)
            episode = episodes[i]
            episode.steps += 1
            episode.total += float(reward)
            episode.success |= bool(info.get("success", False))
            episode.done = terminated or truncated or episode.steps >= limit
        bar.update(1)
    bar.close()
    records = [{
        "seed": e.seed,
        "return": e.total,
        "normalized_score": float(normalized_score(e.total, reference)),
        "success": e.success,
        "length": e.steps,
    } for e in episodes]
    timing = {"planning_calls": calls, "planning_seconds": planning_seconds,
              "seconds_per_call": planning_seconds / max(calls, 1)}
    return records, timing


def flat_observation(observation, dataset: DatasetSpec) -> np.ndarray:
    if isinstance(observation, dict):
        observation = {k: np.asarray(v)[None] for k, v in observation.items()}
    else:
        observation = np.asarray(observation)[None]
    return flatten_observations(observation, dataset.observation, "evaluation")[0].astype(np.float64)


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
