"""Does TT+Q's critic, choosing among the model's proposed actions, have as good an action to
choose as IQL's own actor?

Replays a TT+Q evaluation at horizon 1 (L3 in docs/results.md: every candidate scored by
Q(s_0, a_0) of the observation seen) with the evaluate stage's seeds, so its episodes are the
recorded ones, and at every step sets the candidates against IQL's actor at the same state:
how many distinct actions the model proposed, the Q of the one chosen (the best candidate),
and the Q of the actor's action under the same critic. An actor whose action the critic rates
above every candidate means the proposals lack what the critic would pick; a chosen candidate
rated at or above the actor's action, while TT+Q still fails, means the critic's ranking is the
limit.

    python experiments/probes/critic_choice_probe.py pointmaze-large 0 [--action-top-k 20]
"""

import dataclasses
import json
import sys
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from stages.evaluate import PLANNER_SEED_STRIDE  # noqa: E402
from trajectory_transformer.artifacts import verified_folder_hash  # noqa: E402
from trajectory_transformer.config import load_params, parse, section  # noqa: E402
from trajectory_transformer.datasets import DatasetSpec  # noqa: E402
from trajectory_transformer.evaluation import EvaluateSpec, evaluate, load_batched_agent, summarize  # noqa: E402
from trajectory_transformer.planner import PlannerSpec  # noqa: E402


class RecordingCritic:
    """The IQL critic, recording every state it scores, its candidates and their Q."""

    def __init__(self, agent):
        self.agent, self.calls = agent, []

    def q(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        values = self.agent.q(observations, actions)
        self.calls.append((observations.expand(*actions.shape[:-1], -1).clone(), actions.clone(), values.clone()))
        return values

    def v(self, observations: torch.Tensor) -> torch.Tensor:
        return self.agent.v(observations)


@click.command()
@click.argument("dataset")
@click.argument("seed", type=int)
@click.option("--action-top-k", type=int, help="sample among the k most likely action tokens instead of the mass rule")
def main(dataset: str, seed: int, action_top_k: int | None) -> None:
    torch.set_num_threads(2)
    params = load_params()
    spec = parse(EvaluateSpec, section(params, "evaluate"), "evaluate")
    dataset_spec = parse(DatasetSpec, section(params, f"datasets.{dataset}"), dataset)
    planner = dataclasses.replace(parse(PlannerSpec, {**section(params, "plan"), **dataset_spec.plan}, "plan"), horizon=1)
    if action_top_k is not None:
        planner = dataclasses.replace(planner, action_top_k=action_top_k)
    data_dir = Path("data/raw") / dataset
    data = (data_dir, verified_folder_hash(data_dir, "dataset"))
    critic_dir = Path("models") / dataset / "iql" / f"seed-{seed}"
    agent = load_batched_agent(Path("models") / dataset / "quantile" / f"seed-{seed}", plan=planner, critic=critic_dir,
                               seed=seed * PLANNER_SEED_STRIDE + spec.seed, device=torch.device("cpu"), data=data)
    iql = agent.critic
    recorder = RecordingCritic(iql)
    agent.critic = recorder
    records, _ = evaluate(agent, dataset_spec, data_dir, spec, progress=False)

    distinct, chosen_q, actor_q, actor_beats_all, distance = [], [], [], [], []
    with torch.no_grad():
        for states, actions, values in recorder.calls:
            states, actions, values = states.flatten(0, -2), actions.flatten(0, -2), values.flatten()
            E = len(recorder.calls[0][0])
            per_env = len(values) // E
            for e in range(E):
                rows = slice(e * per_env, (e + 1) * per_env)
                s, a, q = states[rows][0], actions[rows], values[rows]
                best = q.argmax()
                actor_action = iql.mean_action(s[None])[0]
                q_actor = iql.q(s[None], actor_action[None])[0]
                distinct.append(len(torch.unique(a, dim=0)))
                chosen_q.append(float(q[best]))
                actor_q.append(float(q_actor))
                actor_beats_all.append(bool(q_actor > q.max()))
                distance.append(float((a[best] - actor_action).norm()))
    chosen_q, actor_q = np.array(chosen_q), np.array(actor_q)
    click.echo(json.dumps({
        "dataset": dataset, "seed": seed, "action_top_k": planner.action_top_k, "action_cdf": planner.action_cdf, "steps": len(chosen_q), "summary": summarize(records),
        "distinct_candidates_median": float(np.median(distinct)),
        "distinct_candidates_quartiles": [float(np.percentile(distinct, 25)), float(np.percentile(distinct, 75))],
        "chosen_q_mean": float(chosen_q.mean()), "actor_q_mean": float(actor_q.mean()),
        "actor_above_every_candidate": float(np.mean(actor_beats_all)),
        "actor_minus_chosen_q_median": float(np.median(actor_q - chosen_q)),
        "chosen_to_actor_action_distance_median": float(np.median(distance)),
    }, indent=1))


if __name__ == "__main__":
    main()
