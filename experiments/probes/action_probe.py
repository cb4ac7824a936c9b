"""Does a pendulum model's next-action prediction follow the state, or the previous action?

Fresh episodes of each LQR controller (reset seeds from 50,000 on, which no dataset uses) are
tokenized with the dataset's discretizer. At every step with a full window of history, the
model's expected action (teacher-forced, bins decoded as the discretizer decodes them) is set
against the controller's own mean action at that state and against the previous action taken,
and regressed on both: a model that extrapolates its history puts weight on the previous action.
On the same steps, the model's action-token cross-entropy is set against its floor: knowing the
state and the controller, the token's distribution is the controller noise's mass in each bin,
so no model can pay less on average.

    python experiments/probes/action_probe.py models/pendulum-medium-expert/quantile/seed-0 data/discretized/pendulum-medium-expert/quantile
"""

import sys
from pathlib import Path

import click
import gymnasium as gym
import numpy as np
import torch
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from trajectory_transformer.behavior import PENDULUM_LQR_GAIN, PENDULUM_POLICIES, pendulum_state  # noqa: E402
from trajectory_transformer.discretization import Discretizer  # noqa: E402
from trajectory_transformer.training import load_model  # noqa: E402

EPISODES = 20
FIRST_SEED = 50_000
EPISODE_STEPS = 200  # the datasets' fetch.episode_steps


def episode_windows(controller, seed: int, discretizer: Discretizer, window: int):
    """Per step t: tokens of the window ending at t, the controller's mean action at t (before
    clipping), the previous action, and the action token's probability under the controller."""
    env = gym.make("InvertedDoublePendulum-v5", max_episode_steps=EPISODE_STEPS)
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    transitions, means, done = [], [], False
    while not done:
        means.append(float(-controller.gain_scale * PENDULUM_LQR_GAIN @ pendulum_state(observation)))
        action = controller(observation, rng)
        next_observation, reward, terminated, truncated, _ = env.step(action)
        # value: never attended to; the termination penalty would follow the last action, which no window predicts past
        transitions.append(np.concatenate([observation, action, [reward, 0.0]]))
        observation, done = next_observation, terminated or truncated
    tokens = discretizer.tokenize(np.array(transitions))
    action_dim = discretizer.observation_dim
    edges, last = discretizer.edges[action_dim], discretizer.n_bins - 1
    for t in range(window - 1, len(transitions)):
        token = tokens[t, action_dim]
        # clipping at the action bounds puts the tails' mass into the outer bins
        low = -np.inf if token == 0 else edges[token]
        high = np.inf if token == last else edges[token + 1]
        mass = norm.cdf((high - means[t]) / controller.noise) - norm.cdf((low - means[t]) / controller.noise)
        yield tokens[t - window + 1 : t + 1].reshape(-1)[:-1], means[t], transitions[t - 1][action_dim], mass


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, path_type=Path))
@click.argument("discretizer_dir", type=click.Path(exists=True, path_type=Path))
def main(model_dir: Path, discretizer_dir: Path) -> None:
    torch.set_num_threads(1)
    model, _ = load_model(model_dir)
    window = model.config.window
    discretizer = Discretizer.load(discretizer_dir / "discretizer.json")
    D, action_dim = discretizer.transition_dim, discretizer.observation_dim
    for quality, controller in PENDULUM_POLICIES.items():
        rows = [row for episode in range(EPISODES)
                for row in episode_windows(controller, FIRST_SEED + episode, discretizer, window)]
        tokens = torch.as_tensor(np.stack([r[0] for r in rows]))
        with torch.inference_mode():  # the last observation token predicts the action token
            logits = model(tokens)[:, (window - 1) * D + action_dim - 1].double()
        action_tokens = tokens[:, (window - 1) * D + action_dim]
        cross_entropy = -logits.log_softmax(-1).gather(-1, action_tokens[:, None]).mean().item()
        expected = torch.softmax(logits[:, : discretizer.n_bins], -1).numpy() @ discretizer.table[action_dim]
        mean, previous = np.clip([r[1] for r in rows], -1, 1), np.array([r[2] for r in rows])
        floor = float(-np.log(np.maximum([r[3] for r in rows], 1e-12)).mean())
        weights, *_ = np.linalg.lstsq(np.stack([mean, previous, np.ones_like(mean)], 1), expected, rcond=None)
        rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
        print(f"{quality}: {len(rows)} steps; rms of the controller's mean action {rms(mean):.3f}; "
              f"rms(model's expected action - mean) {rms(expected - mean):.3f}; rms(previous action - mean) {rms(previous - mean):.3f}; "
              f"expected = {weights[0]:.2f} mean + {weights[1]:.2f} previous action {weights[2]:+.3f}; "
              f"action-token cross-entropy {cross_entropy:.3f} nats, floor {floor:.3f}")


if __name__ == "__main__":
    main()
