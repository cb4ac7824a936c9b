"""Implicit Q-learning (docs/published-system.md §6) and behavior cloning, read top to bottom.

IQL (Kostrikov et al. 2021, as CORL implements it): two Q networks and their minimum, one V
network fitted to that minimum by expectile regression (so V approaches the best in-data action's
value without querying actions outside the data), Q fitted to r + discount (1 - terminal) V(s'), a Polyak
target for Q only, and an actor trained by advantage-weighted regression, weights
exp(temperature * (Q - V)) capped at `max_weight`. AntMaze subtracts 1 from every reward
(`reward_shift`). Observations are standardized with the dataset's mean and standard deviation,
stored inside the networks as buffers, so training and planning apply the very same
normalization.

Behavior cloning is the same Gaussian policy fitted with every weight 1 (no critic); with
discrete actions (MiniGrid) a categorical policy. Goal-conditioned BC, the baseline of goal
reaching, reads the state each path ends in (the goal dims the Trajectory Transformer puts first)
after the observation, and a map-conditioned one also the map, through the Trajectory
Transformer's own small CNN (`MapEncoder`): the same information, read the same way. (An MLP on
the flattened one-hot map learned its training maps and reached 0 of 10 held-out MiniGrid maps.)

`OfflineAgent` holds one run's networks, the normalization, and the methods the planner and the
evaluation call (`q`, `v`, `act`); `BehaviorCloning` and `ImplicitQLearning` hold its optimizers,
one method per update; `train_agent` is the loop. CPU runs are deterministic for a fixed seed;
runs resume from atomic checkpoints.
"""

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trajectory_transformer import __version__
from trajectory_transformer.artifacts import atomic_directory, write_json, write_training_report
from trajectory_transformer.config import Count, NonNegative, Positive, Probability
from trajectory_transformer.datasets import Transitions
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.model import MapEncoder
from trajectory_transformer.trajectories import SequenceSpec, path_bounds, path_goals
from trajectory_transformer.weights import load_checkpoint, load_weights, resolve_device, save_checkpoint, save_weights, use_cpu_threads

CHECKPOINT_FORMAT = "offline-agent-checkpoint/1"
AGENT_FORMAT = "offline-agent/3"  # /2: the file records its own SHA-256; /3: maps read by a CNN
LOG_STD_RANGE = (-20.0, 2.0)


@dataclass
class BCSpec:
    """The `bc` section of params.yaml: a Gaussian MLP policy fitted by maximum likelihood."""

    datasets: list[str] = field(default_factory=list)  # which datasets get an agent (and its evaluation)
    hidden: list[Count] = field(default_factory=lambda: [256, 256])
    learning_rate: Positive = 3e-4
    batch_size: Count = 256
    updates: Count = 1_000_000
    normalize_observations: bool = True
    log_every: Count = 1000
    checkpoint_every: Count = 10_000
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: Count = 2
    # how a categorical policy acts in evaluation (read there only; a Gaussian acts by its mean):
    # its most likely action, or one drawn from it, seeded as the planner is
    discrete_actions: Literal["greedy", "sample"] = "sample"


@dataclass
class IQLSpec(BCSpec):
    """The `critic` section of params.yaml (published system §6, AntMaze defaults)."""

    discount: Probability = 0.99
    expectile: Probability = 0.9
    temperature: NonNegative = 10.0  # beta of the advantage weight exp(beta * A)
    max_weight: Positive = 100.0
    polyak: Probability = 0.005
    reward_shift: float = -1.0  # added to every reward (AntMaze: -1)


# ---------------------------------------------------------------------------------------------
# Networks


def mlp(inputs: int, hidden: list[int], outputs: int) -> nn.Sequential:
    layers, width = [], inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, outputs))


class OfflineAgent(nn.Module):
    """A policy, and for IQL the critics, over standardized observations (for a goal-conditioned
    policy: the observation and its goal, `goal_dim` more inputs, standardized together; for a
    map-conditioned one, then the (H, W) map of `map_codes` codes, embedded by a CNN as wide as the
    first hidden layer). `action_choices` > 0:
    a categorical policy over that many discrete actions, else a Gaussian."""

    def __init__(self, observation_dim: int, action_dim: int, hidden: list[int], with_critic: bool,
                 goal_dim: int = 0, map_shape: tuple[int, ...] = (), map_codes: int = 0, action_choices: int = 0):
        super().__init__()
        self.goal_dim, self.map_shape, self.map_codes, self.action_choices = goal_dim, tuple(map_shape), map_codes, action_choices
        self.register_buffer("observation_mean", torch.zeros(observation_dim + goal_dim))
        self.register_buffer("observation_std", torch.ones(observation_dim + goal_dim))
        self.register_buffer("action_low", -torch.ones(action_dim))
        self.register_buffer("action_high", torch.ones(action_dim))
        self.map_encoder = MapEncoder(map_shape, map_codes, hidden[0]) if map_codes else None
        self.policy = mlp(observation_dim + goal_dim + (hidden[0] if map_codes else 0), hidden, action_choices or action_dim)
        if not action_choices:
            self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.with_critic = with_critic
        if with_critic:
            self.q1 = mlp(observation_dim + action_dim, hidden, 1)
            self.q2 = mlp(observation_dim + action_dim, hidden, 1)
            self.value = mlp(observation_dim, hidden, 1)

    def actor_parameters(self) -> list[nn.Parameter]:
        """What the actor's loss trains: the policy, its map encoder and its log std."""
        encoder = list(self.map_encoder.parameters()) if self.map_encoder is not None else []
        return [*self.policy.parameters(), *encoder, *([self.log_std] if not self.action_choices else [])]

    def normalize(self, observations: torch.Tensor) -> torch.Tensor:
        return (observations - self.observation_mean) / self.observation_std

    def policy_output(self, observations: torch.Tensor, goals: torch.Tensor | None = None,
                      maps: torch.Tensor | None = None) -> torch.Tensor:
        if (goals is None) != (self.goal_dim == 0) or (maps is None) != (self.map_codes == 0):
            raise ValueError("a goal- or map-conditioned policy needs its goals and maps, and no other does")
        inputs = self.normalize(observations if goals is None else torch.cat([observations, goals], dim=-1))
        if maps is not None:
            inputs = torch.cat([inputs, self.map_encoder(maps).to(inputs.dtype)], dim=-1)
        return self.policy(inputs)

    def mean_action(self, observations: torch.Tensor, goals: torch.Tensor | None = None,
                    maps: torch.Tensor | None = None) -> torch.Tensor:
        """The Gaussian policy's mean: tanh squashed into the data's action range."""
        half = (self.action_high - self.action_low) / 2
        return self.action_low + half * (1 + torch.tanh(self.policy_output(observations, goals, maps)))

    def log_prob(self, observations: torch.Tensor, actions: torch.Tensor, goals: torch.Tensor | None = None,
                 maps: torch.Tensor | None = None) -> torch.Tensor:
        if self.action_choices:
            logits = self.policy_output(observations, goals, maps).log_softmax(-1)
            return logits.gather(-1, actions.long()).squeeze(-1)
        std = self.log_std.clamp(*LOG_STD_RANGE).exp()
        return torch.distributions.Normal(self.mean_action(observations, goals, maps), std).log_prob(actions).sum(-1)

    @torch.no_grad()
    def act(self, observations: torch.Tensor, goals: torch.Tensor | None = None, maps: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """The action executed in evaluation: the policy's mean; a discrete action (as its index) drawn
        with `generator`, or without one the most likely."""
        if self.action_choices:
            logits = self.policy_output(observations, goals, maps)
            if generator is None:
                return logits.argmax(-1, keepdim=True).to(observations.dtype)
            return torch.multinomial(logits.softmax(-1), 1, generator=generator).to(observations.dtype)
        return self.mean_action(observations, goals, maps)

    def q_pair(self, observations: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.cat([self.normalize(observations), actions], dim=-1)
        return self.q1(inputs)[..., 0], self.q2(inputs)[..., 0]

    def q(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min(Q1, Q2)(s, a), in the units of the shifted rewards."""
        return torch.minimum(*self.q_pair(observations, actions))

    def v(self, observations: torch.Tensor) -> torch.Tensor:
        return self.value(self.normalize(observations))[..., 0]


def expectile_loss(difference: torch.Tensor, expectile: float) -> torch.Tensor:
    """mean(|expectile - 1(difference < 0)| * difference^2): asymmetric least squares."""
    weight = torch.where(difference < 0, 1 - expectile, expectile)
    return (weight * difference.square()).mean()


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class TransitionTensors:
    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    not_done: torch.Tensor
    goals: torch.Tensor | None = None  # goal-conditioned BC: each step's goal
    maps: torch.Tensor | None = None  # map-conditioned BC: each step's map, uint8

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, index: torch.Tensor) -> "TransitionTensors":
        return TransitionTensors(*(None if part is None else part[index] for part in (
            self.observations, self.actions, self.rewards, self.next_observations, self.not_done, self.goals, self.maps)))


def step_goals(transitions: Transitions, goal_dims: list[int], max_path_length: int) -> np.ndarray:
    """(T, G): the goal of every step, its path's goal as the goal-conditioned Trajectory
    Transformer is trained with it (`path_goals`: the state the path ends in)."""
    sequence = SequenceSpec(max_path_length=max_path_length)
    lengths = [end - start for start, end in path_bounds(transitions, max_path_length)]
    return np.repeat(path_goals(transitions, sequence, goal_dims), lengths, axis=0).astype(np.float32)


def transition_tensors(transitions: Transitions, reward_shift: float, device: torch.device,
                       goals: np.ndarray | None = None, with_maps: bool = False) -> TransitionTensors:
    """(s, a, r + shift, s', 1 - terminal) for every step with a known successor: a step that
    ends an episode by time-out has none (its next row belongs to another episode) and is
    dropped, as D4RL's `qlearning_dataset` does; a terminal step needs none. Behavior cloning
    needs no successor; it drops the same steps, so both train on one set."""
    steps = len(transitions.actions)
    keep = ~transitions.timeouts
    following = np.minimum(np.arange(steps) + 1, steps - 1)
    following = np.where(transitions.terminals, np.arange(steps), following)

    def tensor(array):
        return torch.as_tensor(np.ascontiguousarray(array[keep]), dtype=torch.float32, device=device)

    return TransitionTensors(
        observations=tensor(transitions.observations),
        actions=tensor(transitions.actions),
        rewards=tensor(transitions.rewards + reward_shift),
        next_observations=tensor(transitions.observations[following]),
        not_done=tensor(~transitions.terminals),
        goals=None if goals is None else tensor(goals),
        maps=torch.as_tensor(np.ascontiguousarray(transitions.maps[keep]), device=device) if with_maps else None,
    )


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class AgentIdentity:
    """Everything the weights depend on; recorded with them and checked on resume."""

    dataset: str
    dataset_sha256: str
    algorithm: Literal["iql", "bc"]
    seed: int
    goal_dims: list[int] = field(default_factory=list)  # goal-conditioned BC: the goal's dims of the observation
    max_path_length: int | None = None  # where paths are cut, which decides each step's goal
    map_conditioned: bool = False  # BC reads each step's map

    def fingerprint(self, spec: BCSpec) -> str:
        # everything but the logging cadence, the list of datasets and how evaluation acts, left unread
        # (the params check counts reads)
        content = {"identity": asdict(self), "spec": {f.name: getattr(spec, f.name) for f in fields(spec)
                                                      if f.name not in ("log_every", "checkpoint_every", "datasets", "discrete_actions")}}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# The two algorithms, one method per update (as CORL writes IQL)


class BehaviorCloning:
    """The Gaussian policy fitted to the data's actions by maximum likelihood."""

    logged = ("actor_loss",)

    def __init__(self, agent: OfflineAgent, spec: BCSpec):
        self.agent, self.spec = agent, spec
        self.actor_optimizer = torch.optim.Adam(agent.actor_parameters(), lr=spec.learning_rate)
        self.actor_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_optimizer, spec.updates)

    def state(self) -> dict:
        """What a checkpoint carries besides the agent: everything with a `state_dict`."""
        return {"actor": self.actor_optimizer, "actor_schedule": self.actor_schedule}

    def update(self, batch: TransitionTensors) -> torch.Tensor:
        """One update; the values of `logged`, detached."""
        return self.update_actor(batch, torch.ones(len(batch), device=batch.actions.device))[None]

    def update_actor(self, batch: TransitionTensors, weights: torch.Tensor) -> torch.Tensor:
        loss = -(weights * self.agent.log_prob(batch.observations, batch.actions, batch.goals, batch.maps)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        self.actor_schedule.step()
        return loss.detach()


class ImplicitQLearning(BehaviorCloning):
    """IQL: V by expectile regression on the target Q, Q on r + discount (1 - terminal) V(s'),
    a Polyak target for Q, then advantage-weighted regression of the policy."""

    logged = ("actor_loss", "q_loss", "v_loss", "q_mean", "advantage_mean")

    def __init__(self, agent: OfflineAgent, spec: IQLSpec):
        super().__init__(agent, spec)
        self.target = copy.deepcopy(agent).requires_grad_(False)
        self.q_optimizer = torch.optim.Adam([*agent.q1.parameters(), *agent.q2.parameters()], lr=spec.learning_rate)
        self.v_optimizer = torch.optim.Adam(agent.value.parameters(), lr=spec.learning_rate)

    def state(self) -> dict:
        return super().state() | {"q": self.q_optimizer, "v": self.v_optimizer, "target": self.target}

    def update(self, batch: TransitionTensors) -> torch.Tensor:
        with torch.no_grad():
            next_v = self.agent.v(batch.next_observations)  # before V moves
        advantage, v_loss, q_mean = self.update_v(batch)
        q_loss = self.update_q(batch, next_v)
        self.update_target()
        weights = torch.exp(self.spec.temperature * advantage).clamp(max=self.spec.max_weight)
        actor_loss = self.update_actor(batch, weights)
        return torch.stack([actor_loss, q_loss, v_loss, q_mean, advantage.mean()])

    def update_v(self, batch: TransitionTensors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The advantage Q_target - V of the batch (detached), the V loss and the mean target Q."""
        with torch.no_grad():
            target_q = self.target.q(batch.observations, batch.actions)
        advantage = target_q - self.agent.v(batch.observations)
        loss = expectile_loss(advantage, self.spec.expectile)
        self.v_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.v_optimizer.step()
        return advantage.detach(), loss.detach(), target_q.mean()

    def update_q(self, batch: TransitionTensors, next_v: torch.Tensor) -> torch.Tensor:
        q_target = batch.rewards + self.spec.discount * batch.not_done * next_v
        q1, q2 = self.agent.q_pair(batch.observations, batch.actions)
        loss = (F.mse_loss(q1, q_target) + F.mse_loss(q2, q_target)) / 2
        self.q_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.q_optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def update_target(self) -> None:
        online = [*self.agent.q1.parameters(), *self.agent.q2.parameters()]
        for parameter, slow in zip(online, [*self.target.q1.parameters(), *self.target.q2.parameters()]):
            slow.lerp_(parameter, self.spec.polyak)


# ---------------------------------------------------------------------------------------------
# Training


def train_agent(transitions: Transitions, spec: BCSpec, identity: AgentIdentity, out_dir: Path, report_dir: Path,
                checkpoint: Path, action_choices: int = 0, progress: bool = True) -> dict:
    """Train IQL (spec: IQLSpec) or BC (spec: BCSpec); write `agent.safetensors` and
    `config.json` to `out_dir`, metrics and dvclive curves to `report_dir`. `action_choices`:
    the number of discrete actions (a categorical BC policy), 0 for continuous ones."""
    iql = identity.algorithm == "iql"
    if iql and not isinstance(spec, IQLSpec):
        raise TypeError("IQL needs an IQLSpec")
    if iql and (identity.goal_dims or identity.map_conditioned or action_choices):
        raise PipelineError(f"IQL here takes continuous actions and no goal: dataset {identity.dataset} is for BC only "
                            "(remove it from params critic.datasets)")
    if identity.map_conditioned and transitions.maps is None:
        raise PipelineError(f"dataset {identity.dataset} has no maps: set its observation.map_key")
    device = resolve_device(spec.device)
    if device.type == "cpu":
        use_cpu_threads(spec.cpu_threads)
    goals = step_goals(transitions, identity.goal_dims, identity.max_path_length) if identity.goal_dims else None
    data = transition_tensors(transitions, spec.reward_shift if iql else 0.0, device, goals, identity.map_conditioned)
    if len(data) < 2:
        raise PipelineError(f"dataset {identity.dataset} has fewer than 2 usable transitions for {identity.algorithm}")

    torch.manual_seed(identity.seed)
    maps = data.maps
    agent = OfflineAgent(data.observations.shape[1], data.actions.shape[1], spec.hidden, with_critic=iql,
                         goal_dim=len(identity.goal_dims), map_shape=tuple(maps.shape[1:]) if maps is not None else (),
                         map_codes=int(maps.max()) + 1 if maps is not None else 0, action_choices=action_choices).to(device)
    if spec.normalize_observations:
        inputs = data.observations if data.goals is None else torch.cat([data.observations, data.goals], dim=-1)
        agent.observation_mean.copy_(inputs.mean(0))
        agent.observation_std.copy_(inputs.std(0).clamp(min=1e-3))
    agent.action_low.copy_(data.actions.min(0).values)
    agent.action_high.copy_(data.actions.max(0).values)
    algorithm = ImplicitQLearning(agent, spec) if iql else BehaviorCloning(agent, spec)
    batches = torch.Generator(device="cpu").manual_seed(identity.seed)

    fingerprint = identity.fingerprint(spec)
    update, history = 0, []
    if checkpoint.exists():
        saved = load_checkpoint(checkpoint, CHECKPOINT_FORMAT)
        if saved["fingerprint"] == fingerprint:
            agent.load_state_dict(saved["agent"])
            for name, part in algorithm.state().items():
                part.load_state_dict(saved[name])
            batches.set_state(saved["batches"])
            update, history = saved["update"], saved["history"]

    running = torch.zeros(len(algorithm.logged), device=device)
    running_steps, clock = 0, time.perf_counter()
    bar = tqdm(total=spec.updates, initial=update, desc=f"{identity.algorithm} {identity.dataset} seed {identity.seed}",
               unit="update", disable=not progress, mininterval=1)
    while update < spec.updates:
        index = torch.randint(len(data), (spec.batch_size,), generator=batches).to(device)
        running += algorithm.update(data[index])
        update += 1
        running_steps += 1
        boundary = update == spec.updates or update % spec.checkpoint_every == 0  # a resumed run logs the same points
        if update % spec.log_every == 0 or boundary:
            means = (running / running_steps).tolist()  # the only host sync, every log_every updates
            history.append({"update": update, **dict(zip(algorithm.logged, means))})
            bar.set_postfix(loss=f"{means[0]:.3f}", updates_per_s=f"{running_steps / (time.perf_counter() - clock):,.0f}", refresh=False)
            bar.update(running_steps)
            running.zero_()
            running_steps, clock = 0, time.perf_counter()
        if update % spec.checkpoint_every == 0 and update < spec.updates:
            state = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "update": update, "history": history,
                     "agent": agent.state_dict(), "batches": batches.get_state(),
                     **{name: part.state_dict() for name, part in algorithm.state().items()}}
            save_checkpoint(state, checkpoint)
    bar.close()

    metrics = {"updates": spec.updates, "transitions": len(data), **{k: v for k, v in history[-1].items() if k != "update"}}
    write_agent(agent, identity, spec, out_dir, report_dir, metrics, history)
    checkpoint.unlink(missing_ok=True)
    return metrics


def write_agent(agent: OfflineAgent, identity: AgentIdentity, spec: BCSpec, out_dir: Path, report_dir: Path,
                metrics: dict, history: list[dict]) -> None:
    metadata = {**asdict(identity), "observation_dim": agent.observation_mean.shape[0] - agent.goal_dim,
                "action_dim": agent.action_low.shape[0], "goal_dim": agent.goal_dim, "map_shape": list(agent.map_shape),
                "map_codes": agent.map_codes, "action_choices": agent.action_choices,
                "hidden": spec.hidden, "library_version": __version__,
                "torch_version": torch.__version__.split("+")[0]}
    write_training_report(report_dir, metrics, history)
    with atomic_directory(out_dir) as scratch:
        save_weights(agent, scratch / "agent.safetensors", AGENT_FORMAT, metadata)
        write_json(scratch / "config.json", metadata)


def load_offline_agent(folder: Path, device: torch.device | str = "cpu") -> tuple[OfflineAgent, dict]:
    """A trained IQL or BC agent and its metadata, loaded without unpickling anything."""
    agent, metadata = load_weights(Path(folder) / "agent.safetensors", AGENT_FORMAT, lambda m: OfflineAgent(
        m["observation_dim"], m["action_dim"], m["hidden"], with_critic=m["algorithm"] == "iql", goal_dim=m.get("goal_dim", 0),
        map_shape=tuple(m.get("map_shape", ())), map_codes=m.get("map_codes", 0), action_choices=m.get("action_choices", 0)))
    return agent.to(device).eval(), metadata
