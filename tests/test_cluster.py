"""The Slurm recipe, offline: stage levels against dvc.lock's own deps and outs, the job arrays
a submission makes and their order, and what one array task runs (sbatch and dvc faked)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT, make_project

sys.path.insert(0, str(ROOT / "cluster"))
from stage_levels import stage_levels  # noqa: E402

FAKE = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "{log}"
{body}
"""


def overlap(dependency: str, output: str) -> bool:
    """A stage reads an output when its dependency is that path, inside it, or a folder around it."""
    return dependency == output or dependency.startswith(output + "/") or output.startswith(dependency + "/")


def test_every_stage_sits_in_a_level_after_the_stages_whose_outputs_it_reads():
    levels = stage_levels(ROOT)
    level_of = {stage: i for i, names in enumerate(levels) for stage in names}
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert sorted(level_of) == sorted(listed.stdout.split()) and sum(map(len, levels)) == len(level_of)
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    outputs = {out["path"]: stage for stage, entry in lock.items() for out in entry.get("outs", [])}
    for stage, entry in lock.items():
        needed = {outputs[o] for dep in entry.get("deps", []) for o in outputs if overlap(dep["path"], o)}
        assert all(level_of[n] < level_of[stage] for n in needed), stage
        assert level_of[stage] == 0 or max(level_of[n] for n in needed) == level_of[stage] - 1, stage
    assert all(s.startswith("fetch@") for s in levels[0]) and levels[-1] == ["report"]


def cluster_project(tmp_path: Path):
    project = make_project(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    project.env["PATH"] = f"{bin_dir}{os.pathsep}{project.env['PATH']}"
    return project, bin_dir, tmp_path / "calls.log"


def fake(bin_dir: Path, name: str, log: Path, body: str = "") -> None:
    (bin_dir / name).write_text(FAKE.format(log=log, body=body))
    (bin_dir / name).chmod(0o755)


def test_a_submission_chains_one_array_per_level(tmp_path):
    project, bin_dir, log = cluster_project(tmp_path)
    fake(bin_dir, "sbatch", log, 'echo $((1000 + $(wc -l < "{log}")))'.format(log=log))
    submit = ["bash", "cluster/slurm/submit.sh", "--partition=gpu"]
    project.dvc("remote", "default", "--unset")
    for refusal in ("uncommitted changes", "no default DVC remote"):  # tasks clone HEAD, and share outputs through the remote
        refused = project.run(*submit, check=False)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and refusal in refused.stderr
        project.run("git", "commit", "-qam", "no remote", check=False)
    project.run("git", "revert", "--no-edit", "HEAD")
    project.run(*submit)
    revision = project.run("git", "rev-parse", "HEAD").stdout.strip()
    calls = [line.split() for line in log.read_text().splitlines()]
    levels = stage_levels(project.path)
    assert len(calls) == len(levels)
    for i, (call, names) in enumerate(zip(calls, levels)):
        assert f"--array=0-{len(names) - 1}" in call and "--partition=gpu" in call
        # the project's remote, beside the checkout, as DVC resolves it there
        assert call[-5:] == ["cluster/slurm/stage.sbatch", str(i), revision, "local", str(tmp_path / "trajectory-transformer-dvc-storage")]
        assert (f"--dependency=afterok:{1000 + i}" in call) == (i > 0)


def test_an_array_task_runs_its_stage_in_a_clone_and_pushes_it(tmp_path):
    project, bin_dir, log = cluster_project(tmp_path)
    (project.path / ".dvc/config.local").write_text("[core]\n    remote = shared\n")
    fake(bin_dir, "dvc", log, 'echo "config.local: $(tr -d "\\n " < .dvc/config.local)" >> "{log}"'.format(log=log))
    revision = project.run("git", "rev-parse", "HEAD").stdout.strip()
    project.env.update(SLURM_SUBMIT_DIR=str(project.path), SLURM_ARRAY_JOB_ID="7", SLURM_ARRAY_TASK_ID="1", TMPDIR=str(tmp_path))
    project.run("bash", "cluster/slurm/stage.sbatch", "2", revision, "shared", "/shared/storage")
    stage = stage_levels(project.path)[2][1]
    assert log.read_text().splitlines() == ["dvc remote modify --local shared url /shared/storage", "config.local: [core]remote=shared",
                                            f"dvc repro --pull {stage}", "config.local: [core]remote=shared",
                                            f"dvc push --run-cache {stage}", "config.local: [core]remote=shared"]
    assert not list(tmp_path.glob("tt-7-1-*"))  # the clone is removed
