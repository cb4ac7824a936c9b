"""Stage `evaluate` and its variants: run one trained agent in its environment.

- TT: `--model` and `--discretizer` (the planner of params `plan`, with the dataset's own
  overrides `datasets.<name>.plan`);
- imitation: the same with `--imitation`, planned as `imitation.mode` says (`beam`: the paper's
  token-by-token likelihood beam search; `likelihood`: ours, sampled actions ranked by likelihood);
- TT+Q: the same plus `--critic` (an IQL agent from the `critic` stage scores the plans);
- BC or IQL: `--policy` (an agent from the `bc` or `critic` stage acts alone).
"""

import dataclasses
import json
from pathlib import Path

import click
import torch

from trajectory_transformer.artifacts import atomic_directory, file_hash, verified_folder_hash, write_json
from trajectory_transformer.cli import stage_command
from trajectory_transformer.config import load_params, parse, section
from trajectory_transformer.critic import BCSpec
from trajectory_transformer.datasets import DatasetSpec
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.evaluation import EvaluateSpec, ImitationSpec, PlanningAgent, evaluate, load_batched_agent, summarize
from trajectory_transformer.planner import PlannerSpec
from trajectory_transformer.weights import resolve_device

PLANNER_SEED_STRIDE = 7919  # planner randomness: a stream per (model seed, evaluation seed)


@click.command()
@click.option("--dataset", required=True, help="key of the dataset under `datasets` in params.yaml")
@click.option("--seed", type=int, required=True, help="the trained agent's seed")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--model", "model_dir", type=click.Path(path_type=Path), help="a trained Trajectory Transformer (TT, TT+Q)")
@click.option("--discretizer", "discretizer_dir", type=click.Path(path_type=Path), help="its discretizer")
@click.option("--critic", "critic_dir", type=click.Path(path_type=Path), help="an IQL agent whose critic scores plans (TT+Q)")
@click.option("--policy", "policy_dir", type=click.Path(path_type=Path), help="a BC or IQL agent that acts alone")
@click.option("--imitation", is_flag=True, help="plan by likelihood alone (imitation.mode), whatever plan.mode says")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--timing", type=click.Path(path_type=Path), required=True, help="wall times, kept out of DVC outputs")
@stage_command
def main(dataset: str, seed: int, data_dir: Path, model_dir: Path | None, discretizer_dir: Path | None,
         critic_dir: Path | None, policy_dir: Path | None, imitation: bool, out_dir: Path, timing: Path) -> None:
    if (policy_dir is None) == (model_dir is None) or (model_dir is None) != (discretizer_dir is None) \
            or (policy_dir is not None and (critic_dir is not None or imitation)):
        raise click.UsageError("give --model and --discretizer (with --critic for TT+Q or --imitation), or --policy alone")
    params = load_params()
    where = f"datasets.{dataset}"
    dataset_spec = parse(DatasetSpec, section(params, where), where)
    spec = parse(EvaluateSpec, section(params, "evaluate"), "evaluate")
    device = resolve_device(spec.device)
    if device.type == "cpu":
        torch.set_num_threads(spec.cpu_threads)
    data = (data_dir, verified_folder_hash(data_dir, "dataset"))
    if policy_dir is not None:
        agent = load_batched_agent(policy_dir, device=device, data=data)
        if isinstance(agent, PlanningAgent):
            raise PipelineError(f"{policy_dir} holds a Trajectory Transformer: pass it as --model, with --discretizer")
        if agent.agent.action_choices and parse(BCSpec, section(params, "bc"), "bc").discrete_actions == "sample":
            agent.draw_actions(seed * PLANNER_SEED_STRIDE + spec.seed)
    else:
        planner = parse(PlannerSpec, {**section(params, "plan"), **dataset_spec.plan}, f"plan (with {where}.plan)")
        if imitation:
            planner = dataclasses.replace(planner, mode=parse(ImitationSpec, section(params, "imitation"), "imitation").mode)
        agent = load_batched_agent(model_dir, plan=planner, critic=critic_dir, discretizer=discretizer_dir,
                                   seed=seed * PLANNER_SEED_STRIDE + spec.seed, device=device, data=data)
    records, times = evaluate(agent, dataset_spec, data_dir, spec)
    summary = summarize(records)
    with atomic_directory(out_dir) as scratch:
        write_json(scratch / "episodes.json", {"weights_sha256": file_hash(agent.weights), "episodes": records})
        write_json(scratch / "metrics.json", summary)
    write_json(timing, times)
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
