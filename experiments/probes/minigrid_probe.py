"""Where does TT lose on MiniGrid's held-out maps: does its model prefer the expert's action,
and does the planner take the model's preference?

Replays the evaluate stage's episodes of one trained model (its seeds, so the episodes are the
recorded ones; each episode's success and length are checked against the recording) and at
every step sets three actions side by side: the one the planner executed, the model's most
likely first action on the same prefix (the probabilities of all action tokens that decode to
each action summed), and the data's shortest-path expert's at the same state, computed from
the episode's static map (walls block, doors do not, as in the generator) and the state's front
cell (a closed door ahead is opened). Reported: how often each pair of the three agree, the model's mean probability of
the expert's action, and its mass on action tokens the data never use. (For comparison, not
computed: the data's own policy agrees with its expert on 0.75 + 0.25 / 4 = 81 % of steps.)
Failed episodes are also described by where they end (the shortest-path distance left from the
final observation) and by how much of their last 40 steps revisit a cell and heading already
seen.

    python experiments/probes/minigrid_probe.py 0
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np
import torch
from minigrid.core.world_object import Door, Wall

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import trajectory_transformer.evaluation as evaluation  # noqa: E402
from stages.evaluate import PLANNER_SEED_STRIDE  # noqa: E402
from trajectory_transformer import gridworld  # noqa: E402
from trajectory_transformer.artifacts import verified_folder_hash  # noqa: E402
from trajectory_transformer.config import load_params, parse, section  # noqa: E402
from trajectory_transformer.datasets import DatasetSpec  # noqa: E402
from trajectory_transformer.evaluation import EvaluateSpec, evaluate, load_batched_agent, summarize  # noqa: E402
from trajectory_transformer.planner import PlannerSpec, make_decoder  # noqa: E402

DATASET = "minigrid-multiroom"
LOOP_WINDOW = 40


class StaticGrid:
    """An episode's map as the expert's search reads a live grid: walls block, doors do not; the
    one door whose state matters (the cell ahead) is closed when the state's front code says so."""

    def __init__(self, layout: np.ndarray, front: tuple[int, int], front_closed: bool):
        self.layout, self.front, self.front_closed = layout, front, front_closed
        self.height, self.width = layout.shape

    def get(self, x: int, y: int):
        code = self.layout[y, x]
        if code == gridworld.WALL:
            return Wall()
        if code == gridworld.DOOR:
            return Door("red", is_open=not ((x, y) == self.front and self.front_closed))
        return None


def expert_action(state: np.ndarray, layout: np.ndarray, goal: tuple[int, int]) -> int:
    x, y, direction, front = (int(v) for v in state)
    dx, dy = gridworld.DIR_TO_VEC[direction]
    grid = StaticGrid(layout, (x + int(dx), y + int(dy)), front == gridworld.DOOR)
    env = SimpleNamespace(unwrapped=SimpleNamespace(agent_pos=(x, y), agent_dir=direction, grid=grid), goal_position=goal)
    return gridworld.ShortestPathExpert().action(env)


def distance_to_goal(layout: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> int:
    grid = StaticGrid(layout, (-1, -1), False)
    steps, cell = 0, start
    while cell != goal:
        cell = gridworld.ShortestPathExpert().next_cell(grid, cell, goal)
        steps += 1
    return steps


@click.command()
@click.argument("seed", type=int)
def main(seed: int) -> None:
    torch.set_num_threads(2)
    params = load_params()
    spec = parse(EvaluateSpec, section(params, "evaluate"), "evaluate")
    dataset_spec = parse(DatasetSpec, section(params, f"datasets.{DATASET}"), DATASET)
    planner = parse(PlannerSpec, {**section(params, "plan"), **dataset_spec.plan}, "plan")
    if planner.replan_every != 1:
        raise click.UsageError("the probe matches plans to steps: it needs plan.replan_every 1")
    data_dir = Path("data/raw") / DATASET
    model_dir = Path("models") / DATASET / "quantile" / f"seed-{seed}"
    agent = load_batched_agent(model_dir, plan=planner, seed=seed * PLANNER_SEED_STRIDE + spec.seed,
                               device=torch.device("cpu"), data=(data_dir, verified_folder_hash(data_dir, "dataset")))
    config = agent.model.config
    N, V = config.observation_dim, config.n_bins
    action_of_bin = agent.discretizer.reconstruct(np.arange(V)[:, None], slice(N, N + 1))[:, 0].round().astype(int)
    used_bins = np.isin(np.arange(V), agent.discretizer.tokenize(np.arange(len(gridworld.ACTIONS), dtype=float)[:, None],
                                                                 slice(N, N + 1))[:, 0])

    steps = []  # per step: [env, model's probability of each action, mass on unused bins, state, executed]
    active_rows, original_plan, original_act = [], evaluation.plan, agent.act

    def recording_plan(model, discretizer, plan_spec, prefix, generator, goal=None, critic=None, maps=None):
        logits = make_decoder(model, plan_spec.context, prefix, plan_spec.cached, goal=goal, maps=maps).logits()
        probs = logits[:, 0, 0, :V].softmax(-1).numpy()
        per_action = np.stack([probs[:, action_of_bin == a].sum(-1) for a in range(len(gridworld.ACTIONS))], -1)
        for row, i in enumerate(active_rows):
            steps.append([i, per_action[row], float(probs[row, ~used_bins].sum())])
        return original_plan(model, discretizer, plan_spec, prefix, generator, goal=goal, critic=critic, maps=maps)

    def recording_act(active, observations):
        active_rows[:] = active
        first = len(steps)
        actions = original_act(active, observations)
        for record, i, action in zip(steps[first:], active, actions):
            record.extend([observations[i].copy(), int(round(float(action[0])))])
        return actions

    evaluation.plan, agent.act = recording_plan, recording_act
    records, _ = evaluate(agent, dataset_spec, data_dir, spec, progress=False)
    evaluation.plan = original_plan
    recorded = json.loads((Path("reports/evaluate") / DATASET / "quantile" / f"seed-{seed}" / "episodes.json").read_text())
    if [(r["success"], r["length"]) for r in records] != [(r["success"], r["length"]) for r in recorded["episodes"]]:
        raise click.ClickException("the replay does not reproduce the recorded evaluation: is the workspace at its run?")

    layouts = [np.asarray(r["map"]) for r in records]
    goals = [tuple(int(v) for v in r["goal"]) for r in records]
    rows = []
    for i, per_action, unused_mass, state, executed in steps:
        expert = expert_action(state, layouts[i], goals[i])
        rows.append((i, executed, int(per_action.argmax()), expert, float(per_action[expert]), unused_mass, state))

    def share(selected, test):
        chosen = [row for row in rows if selected(row)]
        return round(float(np.mean([test(row) for row in chosen])), 3) if chosen else None

    succeeded = {i for i, r in enumerate(records) if r["success"]}
    groups = {"all": lambda row: True, "succeeded": lambda row: row[0] in succeeded,
              "failed": lambda row: row[0] not in succeeded}
    failures = []
    for i, r in enumerate(records):
        if r["success"]:
            continue
        visits = [(int(s[0]), int(s[1]), int(s[2])) for j, _, _, _, _, _, s in rows if j == i]
        tail = visits[-LOOP_WINDOW:]
        repeated = sum(v in visits[: len(visits) - len(tail) + k] for k, v in enumerate(tail))
        end, start = tuple(int(v) for v in r["path"][-1]), visits[0][:2]
        failures.append({"episode": i, "start_distance": distance_to_goal(layouts[i], start, goals[i]),
                         "end_distance": distance_to_goal(layouts[i], end, goals[i]),
                         "last_steps_revisiting": round(repeated / len(tail), 2)})
    click.echo(json.dumps({
        "seed": seed, "successes": summarize(records)["successes"], "steps": len(rows),
        "executed_is_expert": {name: share(g, lambda row: row[1] == row[3]) for name, g in groups.items()},
        "model_argmax_is_expert": {name: share(g, lambda row: row[2] == row[3]) for name, g in groups.items()},
        "executed_is_model_argmax": {name: share(g, lambda row: row[1] == row[2]) for name, g in groups.items()},
        "model_p_expert_mean": {name: share(g, lambda row: row[4]) for name, g in groups.items()},
        "unused_action_bins_mass_mean": share(groups["all"], lambda row: row[5]),
        "failures": failures,
    }, indent=1))


if __name__ == "__main__":
    main()
