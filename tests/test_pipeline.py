"""The DVC pipeline end to end, on the smoke suite, in a throw-away git repository."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import yaml


ANALYZE = "analyze@reacher-medium-quantile-0"
ABLATIONS = ["train-ablation@reacher-medium-quantile-markovian-0", "train-ablation@reacher-medium-quantile-partially_observed-0",
             "train-ablation@reacher-medium-quantile-partially_observed_markovian-0"]
GOALS = ["minigrid-multiroom", "pointmaze-fourrooms"]
IMITATION = "evaluate-imitation@reacher-medium-quantile-0"
# params a stage reads without their changing its outputs, so its dvc.yaml list leaves them out
READ_BUT_UNUSED = {
    ("evaluate-imitation", "plan.mode"): "imitation.mode replaces it",
    ("evaluate-imitation", "plan.critic_score"): "copied with the rest of `plan`; imitation plans without a critic",
}


def params_not_tracked(reads_log, lock: dict) -> dict[str, list[str]]:
    """Per stage run, the params paths it read (as recorded through TT_PARAMS_READS) that its
    `params:` list in dvc.lock does not cover, known exceptions aside; and exceptions never met."""
    found, unmet = {}, set(READ_BUT_UNUSED)
    for line in reads_log.read_text().splitlines():
        run = json.loads(line)
        tracked = list(lock["stages"][run["stage"]].get("params", {}).get("params.yaml", {}))
        kind = run["stage"].split("@")[0]
        for read in {re.sub(r" \(with [^)]*\)", "", r) for r in run["reads"]}:  # a merged section: its base's path
            if any(read == k or read.startswith((k + ".", k + "[")) for k in tracked):
                continue
            if (kind, read) in READ_BUT_UNUSED:
                unmet.discard((kind, read))
            else:
                found.setdefault(run["stage"], []).append(read)
    return {**found, **({"exceptions never met": sorted(map(str, unmet))} if unmet else {})}


def readme_example() -> str:
    """The README's Python example, as users copy it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return re.search(r"## From Python\n.*?```python\n(.*?)```", readme, re.S).group(1)


AGENT_KINDS = """
import numpy as np, trajectory_transformer
from trajectory_transformer import mazes
bc = trajectory_transformer.load_agent("models/reacher-medium/bc/seed-0")
bc.reset()
assert bc.act(np.zeros(10)).shape == (2,)
env = mazes.make_evaluation_env("umaze")
observation, _ = env.reset(seed=0)
for folder, critic in (("models/pointmaze-umaze/iql/seed-0", None), ("models/pointmaze-umaze/quantile/seed-0", "models/pointmaze-umaze/iql/seed-0")):
    agent = trajectory_transformer.load_agent(folder, critic=critic, observation={"observation_keys": ["observation"]},
                                              plan={"horizon": 2, "beam_width": 4} if critic else None, action_space=env.action_space)
    agent.reset()
    assert env.action_space.contains(agent.act(observation))
data = trajectory_transformer.load_dataset("data/raw/reacher-medium", "data/discretized/reacher-medium/quantile")
assert len(data.token_paths) == 40 and data.token_paths[0].shape[1] == 10 + 2 + 2
"""


def stages(name: str, datasets: list[str], suffix: str = "-quantile-0") -> list[str]:
    return [f"{name}@{d}{suffix}" for d in datasets]


def test_suite_switch_and_incremental_reruns(project):
    # the documented switch: DVC composes params.yaml from conf/ and runs the smoke suite
    reads = project.path.parent / "params-read.jsonl"
    project.env["TT_PARAMS_READS"] = str(reads)
    project.dvc("exp", "run", "-S", "suite=smoke")
    del project.env["TT_PARAMS_READS"]
    # every param a stage reads is in its params list: otherwise DVC would reuse stale results
    assert params_not_tracked(reads, yaml.safe_load((project.path / "dvc.lock").read_text())) == {}
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    assert params["suite_name"] == "smoke"
    assert set(params["datasets"]) == {"pointmaze-umaze", "reacher-medium", *GOALS}
    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    assert "smoke" in json.dumps(shown)
    # what a stage writes is a DVC output or ignored: git sees the lock, the params and .gitignore files only
    status = project.run("git", "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    assert [line for line in status if line[3:] not in ("dvc.lock", "params.yaml") and not line.endswith(".gitignore")] == []
    metrics = json.loads((project.path / "reports/datasets/reacher-medium.json").read_text())
    assert metrics["episodes"] == 40 and metrics["transitions"] == 2000
    report = (project.path / "reports/results/results.md").read_text()
    assert "| reacher-medium | " in report and "| pointmaze-umaze | " in report and "git revision" in report
    assert (project.path / "reports/results/scores.png").stat().st_size > 1000
    assert (project.path / "reports/results/training-reacher-medium.png").stat().st_size > 1000
    assert (project.path / "reports/results/scores.tsv").read_text().startswith("method\taverage")
    # imitation and goal reaching (paper section 4.2): their own tables, and the executed paths drawn
    assert "## Imitation on expert data" in report and "| dataset | TT imitation (quantile) | TT (quantile) | BC |" in report
    assert "## Goal reaching" in report and "| pointmaze-fourrooms | " in report and "| minigrid-multiroom | " in report
    for dataset in GOALS:
        assert (project.path / f"reports/results/paths-{dataset}.png").stat().st_size > 1000
        episode = json.loads((project.path / f"reports/evaluate/{dataset}/quantile/seed-0/episodes.json").read_text())["episodes"][0]
        assert len(episode["path"]) == episode["length"] + 1 and len(episode["goal"]) == 2
        config = json.loads((project.path / f"models/{dataset}/quantile/seed-0/config.json").read_text())
        assert config["model_config"]["goal_dims"] == [0, 1]
    minigrid = json.loads((project.path / "reports/evaluate/minigrid-multiroom/quantile/seed-0/episodes.json").read_text())
    assert np.array(minigrid["episodes"][0]["map"]).shape == (25, 25)  # its map travels with each episode
    assert json.loads((project.path / "models/minigrid-multiroom/quantile/seed-0/config.json").read_text())["model_config"]["map_shape"] == [25, 25]
    for dataset in GOALS:  # goal-conditioned BC, a column of the goal-reaching table
        assert len(json.loads((project.path / f"reports/evaluate/{dataset}/bc/seed-0/episodes.json").read_text())["episodes"]) == 2
    gridworld_bc = json.loads((project.path / "models/minigrid-multiroom/bc/seed-0/config.json").read_text())
    assert (gridworld_bc["goal_dim"], gridworld_bc["map_shape"], gridworld_bc["action_choices"]) == (2, [25, 25], 4)
    assert "| pointmaze-fourrooms | " in report.split("## Goal reaching")[1] and "| BC |" in report.split("## Goal reaching")[1]
    summary = json.loads((project.path / "reports/metrics.json").read_text())
    assert "average" in summary
    row = summary["score"]["pointmaze-umaze"]["TT+Q (quantile)"]  # per row what `dvc exp show` compares
    episodes = json.loads((project.path / "reports/evaluate/pointmaze-umaze/tt-q-quantile/seed-0/metrics.json").read_text())
    assert row["mean"] == 100 * episodes["success_rate"] and row["seeds"] == 1 and row["episodes"] == episodes["episodes"]
    assert "- reacher-medium: data (behaviour policy) " in report and "; zero actions (doing nothing) " in report
    shown = project.dvc("metrics", "show").stdout
    assert "reports/metrics.json" in shown and "reports/analyze/reacher-medium/quantile/seed-0.json" in shown
    # the Python API on what the pipeline trained: the README's example, and every kind of agent
    assert project.run(sys.executable, "-c", readme_example()).stdout.startswith("return -")
    project.run(sys.executable, "-c", AGENT_KINDS)

    # the model analysis: Figure 3's curves for the model, its ablations and the ensemble; Figure 4's maps
    analysis = project.path / "reports/analyze/reacher-medium/quantile/seed-0"
    metrics = json.loads((project.path / "reports/analyze/reacher-medium/quantile/seed-0.json").read_text())
    assert set(metrics["fully observed"]) == set(metrics["partially observed"]) == {
        "Trajectory Transformer", "Markovian", "Gaussian ensemble (PETS)", "discrete oracle"}
    assert 0 < len(metrics["hidden_dims"]) < 10  # reacher observes 10 dims
    assert (analysis / "compounding-error.png").stat().st_size > 1000
    assert (analysis / "attention/layer-0-head-1.png").exists()  # smoke: 1 layer, 2 heads
    assert (analysis / "curves.csv").read_text().count("\n") == 1 + 5  # header + horizon
    ablation = json.loads((project.path / "models/reacher-medium/quantile/markovian/seed-0/config.json").read_text())
    assert ablation["model_config"]["window"] == 2

    # nothing changed: nothing runs
    assert project.stages_run() == []

    # a discretizer param reruns discretize and what follows, never fetch
    params["discretize"]["n_bins"] = 10
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    every = [*GOALS, "pointmaze-umaze", "reacher-medium"]
    assert project.stages_run() == [ANALYZE, *stages("discretize", every, "-quantile"), IMITATION,
                                    "evaluate-tt-q@pointmaze-umaze-quantile-0", *stages("evaluate", every),
                                    "report", *ABLATIONS, *stages("train", every)]
    summary = json.loads((project.path / "data/discretized/reacher-medium/quantile/summary.json").read_text())
    assert summary["vocab_size"] == 11

    # a training param reruns train (and its ablations), evaluate, analyze and report only
    params["train"]["optim"]["max_updates"] = 10
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert project.stages_run() == [ANALYZE, IMITATION, "evaluate-tt-q@pointmaze-umaze-quantile-0", *stages("evaluate", every),
                                    "report", *ABLATIONS, *stages("train", every)]

    # a planner param reruns evaluate (and report, if the evaluations changed) only
    params["plan"]["beam_width"] = 3
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = project.stages_run()
    assert ran[:6] == [IMITATION, "evaluate-tt-q@pointmaze-umaze-quantile-0", *stages("evaluate", every)] and ran[6:] in ([], ["report"])

    # one dataset's planner overrides rerun that dataset's evaluation only
    params["datasets"]["pointmaze-fourrooms"]["plan"]["horizon"] = 1
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert project.stages_run()[:1] == ["evaluate@pointmaze-fourrooms-quantile-0"]
    params["datasets"]["pointmaze-fourrooms"]["plan"]["horizon"] = "long"
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = project.dvc("repro", check=False)
    assert result.returncode != 0 and "params plan (with datasets.pointmaze-fourrooms.plan).horizon: expected an integer" in result.stderr
    params["datasets"]["pointmaze-fourrooms"]["plan"]["horizon"] = 1
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # one dataset's own window retrains that dataset's model only
    params["datasets"]["pointmaze-fourrooms"]["sequence"] = {"window": 5}
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = project.stages_run()
    assert ran[0] == "evaluate@pointmaze-fourrooms-quantile-0" and ran[-1] == "train@pointmaze-fourrooms-quantile-0" and len(ran) <= 3
    config = json.loads((project.path / "models/pointmaze-fourrooms/quantile/seed-0/config.json").read_text())
    assert config["model_config"]["window"] == 5
    metrics = json.loads((project.path / "reports/evaluate/reacher-medium/quantile/seed-0/metrics.json").read_text())
    assert metrics["episodes"] == 2
    config = json.loads((project.path / "models/reacher-medium/quantile/seed-0/config.json").read_text())
    assert config["dataset"] == "reacher-medium" and config["model_config"]["n_bins"] == 10

    # one dataset's fetch params rerun that dataset only
    params["datasets"]["reacher-medium"]["fetch"]["episodes"] = 30
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert project.stages_run() == [ANALYZE, "bc@reacher-medium-0", "discretize@reacher-medium-quantile", "evaluate-bc@reacher-medium-0",
                                    IMITATION, "evaluate@reacher-medium-quantile-0", "fetch@reacher-medium", "report",
                                    *ABLATIONS, "train@reacher-medium-quantile-0"]
    assert project.stages_run() == []

    # an analysis param reruns the analysis only; an ablation's param, that ablation and the analysis
    params["analyze"]["rollouts"] = 4
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert project.stages_run() == [ANALYZE]
    params["analyze"]["ablations"]["partially_observed"]["mask_seed"] = 1  # other hidden dims
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = project.dvc("repro", check=False)  # the two partially observed models no longer hide the same dims
    assert result.returncode != 0 and "is not the partially observed model this stage expects" in result.stderr + result.stdout
    params["analyze"]["ablations"]["partially_observed_markovian"]["mask_seed"] = 1
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert project.stages_run() == [ANALYZE, *ABLATIONS[2:]]  # the report reads no ablation

    # a critic param reruns the critic and what uses it: TT+Q, IQL and the report
    params["critic"]["expectile"] = 0.7
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert project.stages_run() == ["critic@pointmaze-umaze-0", "evaluate-iql@pointmaze-umaze-0",
                                    "evaluate-tt-q@pointmaze-umaze-quantile-0", "report"]
    report = (project.path / "reports/results/results.md").read_text()
    assert "| dataset | TT (quantile) | TT+Q (quantile) | IQL | BC |" in report  # the maze table
    assert "| dataset | TT (quantile) | BC |" in report  # reacher: no critic

    # a critic that belongs to another dataset, or none at all, is refused in one line
    evaluate = [sys.executable, "-m", "stages.evaluate", "--dataset", "pointmaze-umaze", "--seed", "0",
                "--data", "data/raw/pointmaze-umaze", "--discretizer", "data/discretized/pointmaze-umaze/quantile",
                "--model", "models/pointmaze-umaze/quantile/seed-0", "--out", "reports/x", "--timing", "reports/x.json"]
    result = project.run(*evaluate, "--critic", "models/reacher-medium/bc/seed-0", check=False)
    assert result.returncode == 1 and "trained on another dataset" in result.stderr.strip().splitlines()[-1]
    result = project.run(*evaluate, "--critic", "models/pointmaze-umaze/iql/seed-9", check=False)
    assert result.returncode == 1 and "no weights at" in result.stderr.strip().splitlines()[-1]
    assert not (project.path / "reports/x").exists()

    # a discretizer that belongs to another dataset is refused by train, in one line
    result = project.run(sys.executable, "-m", "stages.train", "--dataset", "reacher-medium", "--seed", "0",
                         "--data", "data/raw/reacher-medium", "--discretizer", "data/discretized/pointmaze-umaze/quantile",
                         "--out", "models/x", "--report", "reports/x", "--checkpoint", "models/.checkpoints/x.pt", check=False)
    assert result.returncode == 1 and "fitted on other data" in result.stderr.strip().splitlines()[-1]
    assert not (project.path / "models/x").exists()


def test_every_experiment_names_a_suite_that_exists(project):
    suites = sorted(p.stem for p in (project.path / "conf/suite").glob("*.yaml"))
    result = project.dvc("exp", "run", "-S", "suite=nonexistent", check=False)
    assert result.returncode != 0
    output = result.stderr + result.stdout  # Hydra's message, through DVC: the missing suite, then the ones there are
    assert "Could not find 'suite/nonexistent'" in output
    listed = output.split("Available options in 'suite':")[1].split("Config search path")[0].split()
    assert listed == suites
    # DVC recomposes params.yaml from each run's overrides: one that names no suite must not run the default one
    params = (project.path / "params.yaml").read_text()
    result = project.dvc("exp", "run", "-S", "plan.horizon=5", check=False)
    assert result.returncode != 0 and "Running stage" not in result.stdout
    output = result.stderr + result.stdout
    assert "You must specify 'suite'" in output and output.split("Available options:")[1].split("Having any")[0].split() == suites
    assert (project.path / "params.yaml").read_text() == params


def test_bad_params_stop_a_stage_with_one_line(project):
    project.compose("smoke")
    fetch = [sys.executable, "-m", "stages.fetch", "--out", "data/raw/x", "--metrics", "reports/x.json"]
    result = project.run(*fetch, "--dataset", "no-such-dataset", check=False)
    assert result.returncode == 1
    assert result.stderr == ("error: params: no 'no-such-dataset' in datasets (known: minigrid-multiroom, pointmaze-fourrooms, "
                             "pointmaze-umaze, reacher-medium)\n")

    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["datasets"]["reacher-medium"]["fetch"]["source"] = "ftp"
    (project.path / "params.yaml").write_text(yaml.safe_dump(params))
    result = project.run(*fetch, "--dataset", "reacher-medium", check=False)
    assert result.returncode == 1
    assert result.stderr == "error: params datasets.reacher-medium.fetch.source: expected one of 'minari', 'generate', got 'ftp'; fix it in params.yaml\n"
    assert not (project.path / "data/raw/x").exists()

    # out of range, not only of the wrong type: refused when the params are read, before any work
    params["datasets"]["reacher-medium"]["fetch"]["source"] = "generate"
    params["train"]["optim"]["batch_size"] = 0
    (project.path / "params.yaml").write_text(yaml.safe_dump(params))
    result = project.run(sys.executable, "-m", "stages.train", "--dataset", "reacher-medium", "--seed", "0", "--data", "data/raw/x",
                         "--discretizer", "data/discretized/x", "--out", "models/x", "--report", "reports/x",
                         "--checkpoint", "models/.checkpoints/x.pt", check=False)
    assert result.returncode == 1
    assert result.stderr == "error: params train.optim.batch_size: expected an integer >= 1, got 0; fix it in params.yaml\n"


def test_a_stage_runs_the_library_of_its_own_checkout(project):
    """The installed library may be another checkout's: a stage still runs this one's, the code DVC hashed."""
    project.compose("smoke")
    cli = project.path / "trajectory_transformer/cli.py"
    cli.write_text(cli.read_text() + '\nraise SystemExit("the library of this checkout ran")\n')
    result = project.dvc("repro", "-s", "fetch@reacher-medium", check=False)
    assert result.returncode != 0 and "the library of this checkout ran" in result.stderr + result.stdout


def test_an_unexpected_failure_is_one_line_and_writes_nothing(project):
    project.compose("smoke")
    datasets = project.path / "trajectory_transformer/datasets.py"  # a bug deep inside the library
    datasets.write_text(datasets.read_text().replace("    out_dir = Path(out_dir)\n", "    out_dir = Path(out_dir)\n    {}['episodes']\n", 1))
    fetch = [sys.executable, "-m", "stages.fetch", "--dataset", "reacher-medium", "--out", "data/raw/x", "--metrics", "reports/x.json"]
    result = project.run(*fetch, check=False)
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if not line.startswith("fetch")] == [  # (tqdm's bar aside)
        "error: stage fetch failed unexpectedly: KeyError: 'episodes' (rerun with TT_DEBUG=1 for the traceback, and please report it)"]
    assert not (project.path / "data/raw/x").exists() and not (project.path / "reports/x.json").exists()
    project.env["TT_DEBUG"] = "1"
    assert "Traceback" in project.run(*fetch, check=False).stderr
