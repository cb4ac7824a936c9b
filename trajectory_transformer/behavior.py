"""Behavior policies that generate the offline datasets on a CPU, deterministically from a seed.

Reacher (dense reward, MuJoCo): a Jacobian-transpose PD controller on the fingertip error.
Its gains were tuned by a sweep (kp 2..40, kd 0.01..0.1, 30 seeded episodes each):
kp 20, kd 0.1 gives a mean return of about -5.4 against -43.6 for uniform random actions.
Data qualities are graded versions of it, analogous to D4RL's:
- expert: the tuned controller with small Gaussian action noise;
- medium: a weak controller (a tenth of the gain) with larger noise: about a third of the way
  from random to expert, as D4RL's medium policies were;
- medium-replay: mixed and mostly poor: each episode draws a skill s = u^2 (u uniform), and each
  step follows the medium controller with probability s, else a uniform random action
  (D4RL's replay buffers hold a training run's history, mostly from early, poor policies);
- medium-expert: medium and expert combined, as D4RL built it.

InvertedDoublePendulum (alive bonus, falls end the episode, MuJoCo): a discrete-time LQR on the
state (cart position, the two hinge angles, their velocities), linearized about the upright
position. Doing nothing falls in about 10 steps and so does acting at random, so, unlike
Reacher, a wrong average action is punished. Qualities:
- expert: the LQR with N(0, 0.1^2) action noise (balances every 200-step episode);
- medium: the LQR at 0.6 of its gain with N(0, 0.05^2) noise: a weaker controller, not noise
  around the expert, that falls in about two episodes of three (about a third of the expert's return);
- medium-replay: snapshots of a controller that learns: each episode draws its progress p
  (uniform) and follows the LQR at 0.6 p of its gain with N(0, (0.05 + 0.2 (1 - p))^2) noise,
  from falling at once to medium, as D4RL's replay buffers hold a run's whole history;
- medium-expert: medium and expert combined.
"""

from dataclasses import dataclass

import numpy as np

REACHER_LINKS = (0.1, 0.11)  # link lengths up to the fingertip, from gymnasium's reacher.xml


@dataclass(frozen=True)
class ReacherController:
    position_gain: float
    velocity_gain: float
    noise: float

    def __call__(self, observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cos1, cos2, sin1, sin2 = observation[0:4]
        joint_velocity = observation[6:8]
        fingertip_error = observation[8:10]  # fingertip minus target
        q1, q12 = np.arctan2(sin1, cos1), np.arctan2(sin1 * cos2 + cos1 * sin2, cos1 * cos2 - sin1 * sin2)
        l1, l2 = REACHER_LINKS
        jacobian = np.array(
            [[-l1 * np.sin(q1) - l2 * np.sin(q12), -l2 * np.sin(q12)],
             [l1 * np.cos(q1) + l2 * np.cos(q12), l2 * np.cos(q12)]]
        )
        action = jacobian.T @ (-self.position_gain * fingertip_error) - self.velocity_gain * joint_velocity
        if self.noise > 0:
            action = action + rng.normal(0.0, self.noise, size=2)
        return np.clip(action, -1.0, 1.0)


REACHER_EXPERT = ReacherController(position_gain=20.0, velocity_gain=0.1, noise=0.0)
REACHER_POLICIES = {
    "expert": ReacherController(position_gain=20.0, velocity_gain=0.1, noise=0.1),
    "medium": ReacherController(position_gain=2.0, velocity_gain=0.1, noise=0.3),
}


def uniform_random_action(rng: np.random.Generator, dims: int) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=dims)


# Discrete-time LQR gain for InvertedDoublePendulum-v5 (dt 0.05 s: 5 MuJoCo steps), on the state
# (x, theta1, theta2, x', theta1', theta2'): the env step linearized by central differences about
# the upright rest state, Q = diag(1, 10, 10, 0.1, 0.1, 0.1), R = 1, the Riccati iteration run to
# convergence. Closed-loop spectral radius 0.93 (tests/test_datasets.py checks it stabilizes).
PENDULUM_LQR_GAIN = np.array([0.2128, 1.8131, 5.5687, 0.3149, 0.9024, 0.8482])
PENDULUM_MEDIUM_GAIN = 0.6


def pendulum_state(observation: np.ndarray) -> np.ndarray:
    """(x, theta1, theta2, x', theta1', theta2') from InvertedDoublePendulum-v5's observation."""
    angles = np.arctan2(observation[1:3], observation[3:5])
    return np.concatenate([observation[:1], angles, observation[5:8]])


@dataclass(frozen=True)
class PendulumController:
    gain_scale: float
    noise: float

    def __call__(self, observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        action = -self.gain_scale * PENDULUM_LQR_GAIN @ pendulum_state(observation)
        if self.noise > 0:
            action = action + rng.normal(0.0, self.noise)
        return np.clip(np.atleast_1d(action), -1.0, 1.0)


PENDULUM_EXPERT = PendulumController(gain_scale=1.0, noise=0.0)
PENDULUM_POLICIES = {
    "expert": PendulumController(gain_scale=1.0, noise=0.1),
    "medium": PendulumController(gain_scale=PENDULUM_MEDIUM_GAIN, noise=0.05),
}


class PendulumBehavior:
    """One episode's behavior policy for a data quality (see the module docstring)."""

    def __init__(self, quality: str, rng: np.random.Generator):
        self.rng = rng
        if quality == "random":
            self.controller = None
        elif quality == "medium-replay":
            progress = rng.uniform()
            self.controller = PendulumController(PENDULUM_MEDIUM_GAIN * progress, 0.05 + 0.2 * (1 - progress))
        else:
            self.controller = PENDULUM_POLICIES[quality]

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        if self.controller is None:
            return uniform_random_action(self.rng, 1)
        return self.controller(observation, self.rng)


class ReacherBehavior:
    """One episode's behavior policy for a data quality (see the module docstring)."""

    def __init__(self, quality: str, rng: np.random.Generator):
        self.rng = rng
        if quality == "random":
            self.skill, self.controller = 0.0, REACHER_POLICIES["medium"]
        elif quality == "medium-replay":
            self.skill, self.controller = rng.uniform() ** 2, REACHER_POLICIES["medium"]
        else:
            self.skill, self.controller = 1.0, REACHER_POLICIES[quality]

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        if self.skill < 1.0 and self.rng.uniform() >= self.skill:
            return uniform_random_action(self.rng, 2)
        return self.controller(observation, self.rng)
