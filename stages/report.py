"""Stage `report`: the paper's tables and figures from our own runs (reports/results.md)."""

import json
import subprocess
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import gymnasium as gym  # noqa: E402
import minari  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from trajectory_transformer.artifacts import atomic_directory, verified_folder_hash, write_json  # noqa: E402
from trajectory_transformer.cli import stage_command  # noqa: E402
from trajectory_transformer.config import load_params, parse, section  # noqa: E402
from trajectory_transformer.datasets import GENERATORS, DatasetSpec  # noqa: E402
from trajectory_transformer.discretization import DiscretizeSpec  # noqa: E402
from trajectory_transformer.evaluation import EvaluateSpec, ImitationSpec  # noqa: E402
from trajectory_transformer.reporting import (  # noqa: E402
    OTHER_PUBLISHED, PUBLISHED_AVERAGES, Result, collect, interquartile_mean, method_folders, published_table,
    score_table,
)
from trajectory_transformer.training import TrainSpec  # noqa: E402

# dvclive's names, one file each; the last only for goal-conditioned models (their actions given another goal)
TRAINING_CURVES = ("train/loss", "validation/observation", "validation/action", "validation/action_other_goal")


def is_maze(spec: DatasetSpec) -> bool:
    ids = " ".join(np.atleast_1d(spec.fetch.minari_id or []).astype(str))
    return (spec.fetch.source == "generate" and GENERATORS[spec.fetch.generator].fixed_goal_maze) or "maze" in ids


def is_goal_reaching(spec: DatasetSpec) -> bool:
    return spec.observation.task == "goal-reaching"


def source(spec: DatasetSpec) -> str:
    fetch = spec.fetch
    if fetch.source == "minari":
        return " + ".join(np.atleast_1d(fetch.minari_id).astype(str))
    return f"generated: {fetch.generator} {GENERATORS[fetch.generator].detail(fetch)}, seed {fetch.seed}"


def paths_figure(spec: DatasetSpec, episodes_file: Path, path: Path) -> None:
    """Figure 6: the executed paths of held-out goals (four rooms), or of held-out maps (MiniGrid)."""
    GENERATORS[spec.fetch.generator].draw_paths(spec.fetch, json.loads(episodes_file.read_text())["episodes"], path)


def floor_line(dataset: str, summary: dict) -> str:
    """What the data's own episodes score, and doing nothing where the fetch stage measured it."""
    line = f"- {dataset}: data (behaviour policy) {summary['normalized_score']:.1f}"
    if "zero_action_normalized_score" in summary:
        line += f"; zero actions (doing nothing) {summary['zero_action_normalized_score']:.1f}"
    return line


def row_metrics(result: Result, success_rated: bool) -> dict:
    mean, stderr = result.cell(success_rated)
    return {"mean": mean, "stderr": stderr, "seeds": result.seeds, "episodes": len(result.scores)}


def environment(data_dir: Path) -> str:
    verified_folder_hash(data_dir, "dataset")
    metadata = json.loads((data_dir / "data" / "metadata.json").read_text())
    spec = json.loads(metadata.get("eval_env_spec") or metadata["env_spec"])
    return spec["id"]


def revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def bar_figure(averages: dict[str, float], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.bar(list(averages), list(averages.values()), color="#4c72b0")
    axis.set_ylabel("average score")
    axis.set_title("Average per method (our runs)")
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
    path.with_suffix(".tsv").write_text("method\taverage\n" + "".join(f"{m}\t{v:.4f}\n" for m, v in averages.items()))


def training_figure(train_root: Path, dataset: str, kinds: list[str], seeds: list[int], path: Path) -> list[str]:
    """Draw a dataset's training curves; their rows (dataset, kind, seed, metric, update, value)."""
    rows = []
    figure, axis = plt.subplots(figsize=(5, 3))
    for kind in kinds:
        for seed in seeds:
            for metric in TRAINING_CURVES:
                tsv = train_root / dataset / kind / f"seed-{seed}" / "live/plots/metrics" / f"{metric}.tsv"
                if not tsv.exists():
                    continue
                table = np.loadtxt(tsv, skiprows=1, ndmin=2)
                axis.plot(table[:, 0], table[:, 1], label=f"{kind} s{seed} {metric}")
                rows += [f"{dataset}\t{kind}\t{seed}\t{metric}\t{int(u)}\t{v:.6f}" for u, v in table]
    if rows:
        axis.set_xlabel("update")
        axis.set_ylabel("cross-entropy")
        axis.set_title(dataset)
        axis.legend(fontsize=6)
        figure.tight_layout()
        figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
    return rows


@click.command()
@click.option("--evaluations", type=click.Path(path_type=Path), default=Path("reports/evaluate"))
@click.option("--training", type=click.Path(path_type=Path), default=Path("reports/train"))
@click.option("--datasets-metrics", type=click.Path(path_type=Path), default=Path("reports/datasets"))
@click.option("--data", type=click.Path(path_type=Path), default=Path("data/raw"))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/results"))
@click.option("--metrics", type=click.Path(path_type=Path), default=Path("reports/metrics.json"))
@stage_command
def main(evaluations: Path, training: Path, datasets_metrics: Path, data: Path, out_dir: Path, metrics: Path) -> None:
    params = load_params()
    specs = {name: parse(DatasetSpec, entry, f"datasets.{name}") for name, entry in section(params, "datasets").items()}
    kinds = parse(DiscretizeSpec, section(params, "discretize"), "discretize").kinds
    train = parse(TrainSpec, section(params, "train"), "train")
    evaluate = parse(EvaluateSpec, section(params, "evaluate"), "evaluate")
    critic_datasets = set(section(params, "critic.datasets"))
    imitation = parse(ImitationSpec, section(params, "imitation"), "imitation")
    imitation_datasets = [d for d in imitation.datasets if d in specs]
    summaries = {d: json.loads((datasets_metrics / f"{d}.json").read_text()) for d in specs if (datasets_metrics / f"{d}.json").exists()}
    folders = method_folders(kinds)
    results = collect(evaluations, list(specs), folders, train.seeds)
    goal_reaching = [d for d in specs if is_goal_reaching(specs[d])]
    mazes = [d for d in specs if is_maze(specs[d]) and d not in goal_reaching]
    others = [d for d in specs if d not in mazes and d not in goal_reaching]

    def methods_run(datasets: list[str]) -> list[str]:
        """The columns of a table: every method the suite runs on one of its datasets."""
        with_critic = any(d in critic_datasets for d in datasets)
        return [m for folder, m in folders.items() if not folder.startswith("imitation-")
                and (with_critic or not (folder.startswith("tt-q-") or folder == "iql"))]

    methods = methods_run(list(specs))

    lines = [f"# Results: suite `{params.get('suite_name', '?')}`", ""]
    lines += ["Our runs: mean ± standard error over seeds × episodes; best per row in bold; "
              "`missing` = not evaluated (never counted as zero).", ""]
    if others:
        lines += ["## Normalized return (Table 1 layout)", "", score_table(results, others, methods_run(others), maze=False)]
        lines += [floor_line(d, summaries[d]) for d in others if d in summaries] + [""]
    if mazes:
        lines += ["## Success rate × 100 (Table 2 layout)", "", score_table(results, mazes, methods_run(mazes), maze=True)]
        counts = [f"- {d}, {m}: {sum(r.successes)} of {len(r.successes)} episodes reached the goal"
                  for d in mazes for m, r in results.get(d, {}).items()]
        lines += counts + [""]
        lines += ["Normalized return of the same episodes (the return counts the steps spent at the goal: "
                  "how well an agent stays once there; for reference, not the paper's measure):", "",
                  score_table(results, mazes, methods_run(mazes), maze=False)]
    if imitation_datasets:
        imitation_methods = [m for f, m in folders.items() if f.startswith("imitation-")] + [f"TT ({k})" for k in kinds] + ["BC"]
        lines += ["## Imitation on expert data (paper section 4.2): normalized return", "",
                  f"TT imitation plans by likelihood alone (no reward, no value), searched "
                  f"{'token by token as published (beam search over every bin)' if imitation.mode == 'beam' else 'over sampled actions (ours)'}; "
                  "TT is the same model planning "
                  "for reward; the data row is the behaviour policy's own score.", "",
                  score_table(results, imitation_datasets, imitation_methods, maze=False)]
        lines += [floor_line(d, summaries[d]) for d in imitation_datasets if d in summaries] + [""]
    if goal_reaching:
        lines += ["## Goal reaching (paper section 4.2 and appendix F): goals reached × 100", "",
                  "Held-out start/goal pairs (four rooms) or held-out maps (MiniGrid), never in the training data; "
                  "the goal-conditioned model plans by likelihood towards the desired final state; BC is "
                  "goal-conditioned too, given the same goal (and map) as inputs.", "",
                  score_table(results, goal_reaching, [f"TT ({k})" for k in kinds]
                              + ["BC"] * any("BC" in results.get(d, {}) for d in goal_reaching), maze=True)]
        lines += [f"- {d}, {m}: {sum(r.successes)} of {len(r.successes)} goals reached; executed paths: `paths-{d}.png`"
                  for d in goal_reaching for m, r in results.get(d, {}).items()] + [""]
    # returns and success rates are different quantities: aggregate each over its own datasets
    iqm_datasets = others or mazes
    iqm_of = "normalized return" if others else "success rate × 100"
    lines += [f"## Interquartile mean of the {iqm_of} (95% bootstrap CI, all episodes)", "",
              "| method | IQM | 95% CI | episodes |", "|---|---|---|---|"]
    iqm = interquartile_mean({d: results[d] for d in iqm_datasets if d in results}, methods, set(mazes))
    lines += [f"| {m} | {v['iqm']:.1f} | [{v['ci95_low']:.1f}, {v['ci95_high']:.1f}] | {v['episodes']} |" for m, v in iqm.items()]
    lines += ["", "## Published numbers (the paper; not our runs)", ""]
    published = published_table(list(specs))
    lines += [published if published else "No dataset of this suite appears in the paper's tables "
              "(the offline suite uses generated data).", ""]
    lines += ["Published averages: " + "; ".join(f"{table}: " + ", ".join(f"{m} {v}" for m, v in row.items())
                                                for table, row in PUBLISHED_AVERAGES.items()), ""]
    others_published = published_table(list(specs), OTHER_PUBLISHED)
    if others_published:
        lines += ["## Other published baselines (not the paper; not our runs)", "", others_published]
    lines += ["## Reproduce", "", f"- git revision: `{revision()}`; mujoco {mujoco.__version__}, "
              f"gymnasium {gym.__version__}, minari {minari.__version__}, torch {torch.__version__.split('+')[0]}",
              f"- seeds: {train.seeds}; episodes per seed: {evaluate.episodes}; evaluation seed: {evaluate.seed}"]
    for name, spec in specs.items():
        reference = summaries.get(name, {})
        env = environment(data / name) if (data / name / "data" / "metadata.json").exists() else "?"
        lines.append(f"- {name}: {source(spec)}; environment `{env}`; normalization: random "
                     f"{reference.get('reference_random_return', float('nan')):.4g}, expert {reference.get('reference_expert_return', float('nan')):.4g} "
                     f"({reference.get('reference_source', '?')})")
    lines += ["", "Footnotes: generated datasets are not the paper's; the locomotion datasets of the paper suite "
              "are Minari v0 (Gymnasium v5 environments), not D4RL v2, and are normalized with D4RL's constants.", ""]

    averages = {"normalized_return": {}, "success_rate": {}}
    for group, datasets in (("normalized_return", others), ("success_rate", mazes)):
        for method in methods:
            values = [results[d][method].cell(d in mazes)[0] for d in datasets if method in results.get(d, {})]
            if values:
                averages[group][method] = float(np.mean(values))
    success_rated = set(mazes) | set(goal_reaching)
    with atomic_directory(out_dir) as scratch:
        (scratch / "results.md").write_text("\n".join(lines))
        bar_figure(averages["normalized_return"] or averages["success_rate"], scratch / "scores.png")
        curves = [row for dataset in specs for row in training_figure(training, dataset, kinds, train.seeds, scratch / f"training-{dataset}.png")]
        (scratch / "training-curves.tsv").write_text("\n".join(["dataset\tkind\tseed\tmetric\tupdate\tvalue", *curves]) + "\n")
        for dataset in goal_reaching:
            episodes_file = evaluations / dataset / kinds[0] / f"seed-{train.seeds[0]}" / "episodes.json"
            if episodes_file.exists():
                paths_figure(specs[dataset], episodes_file, scratch / f"paths-{dataset}.png")
    write_json(metrics, {
        "score": {d: {m: row_metrics(results[d][m], d in success_rated) for m in results[d]} for d in results},
        "average": averages,
        "iqm": {m: v["iqm"] for m, v in iqm.items()},
    })


if __name__ == "__main__":
    main()
