"""The lowest action-token cross-entropy a model of the pendulum data can reach.

Each episode of a generated InvertedDoublePendulum dataset comes from one LQR controller (gain
scale g, Gaussian noise s; behavior.py), identified here by which controller's mean fits its
actions best. Knowing the state and the controller, the action token's distribution is the
noise's mass in each bin, so the mean of -log P(token) is what even a perfect model pays:
compare it with a trained model's validation cross-entropy of action tokens.

    python experiments/probes/action_floor.py data/raw/pendulum-medium-expert data/discretized/pendulum-medium-expert/quantile
"""

import sys
from pathlib import Path

import click
import h5py
import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from trajectory_transformer.behavior import PENDULUM_LQR_GAIN, PENDULUM_POLICIES, pendulum_state  # noqa: E402
from trajectory_transformer.discretization import Discretizer  # noqa: E402


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, path_type=Path))
@click.argument("discretizer_dir", type=click.Path(exists=True, path_type=Path))
def main(data_dir: Path, discretizer_dir: Path) -> None:
    discretizer = Discretizer.load(discretizer_dir / "discretizer.json")
    action_dim = discretizer.observation_dim
    edges = discretizer.edges[action_dim]
    totals = {quality: [0.0, 0] for quality in PENDULUM_POLICIES}
    with h5py.File(data_dir / "data" / "main_data.hdf5") as data:
        for key in data:
            observations, actions = data[key]["observations"][:-1], data[key]["actions"][:, 0]
            lqr = -np.array([PENDULUM_LQR_GAIN @ pendulum_state(o) for o in observations])
            fits = {q: np.mean((np.clip(c.gain_scale * lqr, -1, 1) - actions) ** 2) for q, c in PENDULUM_POLICIES.items()}
            quality = min(fits, key=fits.get)
            controller = PENDULUM_POLICIES[quality]
            tokens = discretizer.tokenize(actions[:, None], dims=slice(action_dim, action_dim + 1))[:, 0]
            # clipping at the action bounds puts the tails' mass into the outer bins
            low = np.where(tokens == 0, -np.inf, edges[tokens])
            high = np.where(tokens == discretizer.n_bins - 1, np.inf, edges[tokens + 1])
            mean = controller.gain_scale * lqr
            mass = norm.cdf((high - mean) / controller.noise) - norm.cdf((low - mean) / controller.noise)
            totals[quality][0] += float(-np.log(np.maximum(mass, 1e-12)).sum())
            totals[quality][1] += len(mass)
    steps = sum(n for _, n in totals.values())
    print(f"{data_dir.name}: action-token cross-entropy floor {sum(s for s, _ in totals.values()) / steps:.3f} nats over {steps} steps;",
          "; ".join(f"{q} {s / n:.3f} ({n} steps)" for q, (s, n) in totals.items() if n))


if __name__ == "__main__":
    main()
