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
