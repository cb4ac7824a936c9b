"""Every artifact a stage loads is verified against what the stage that wrote it recorded: a
corrupted, truncated, edited or foreign file is refused in one line, through the stage commands."""

import json
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import Project, make_project
from trajectory_transformer.critic import AGENT_FORMAT
from trajectory_transformer.training import MODEL_FORMAT

DATA, DISCRETIZER = "data/raw/reacher-medium", "data/discretized/reacher-medium/quantile"
MODEL, AGENT = "models/reacher-medium/quantile/seed-0", "models/reacher-medium/bc/seed-0"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Project:
    """The smoke suite's Reacher data, discretizer, model and BC agent, made by their stages."""
    project = make_project(tmp_path_factory.mktemp("integrity"))
    project.compose("smoke")
    project.dvc("repro", "train@reacher-medium-quantile-0", "bc@reacher-medium-0")
    return project


def evaluate(project: Project, data=DATA, discretizer=DISCRETIZER, model=MODEL, policy=None):
    inputs = ["--policy", policy] if policy else ["--discretizer", discretizer, "--model", model]
    return project.run(sys.executable, "-m", "stages.evaluate", "--dataset", "reacher-medium", "--seed", "0", "--data", data,
                       *inputs, "--out", "reports/x", "--timing", "reports/x.json", check=False)


def refused(result, *phrases: str) -> None:
    """Exit 1, the whole of stderr one line with every phrase, nothing written."""
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert all(p in result.stderr for p in phrases), result.stderr


def copy(project: Project, source: str, name: str) -> str:
    target = f"scratch/{name}"
    shutil.copytree(project.path / source, project.path / target, dirs_exist_ok=False)
    return target


def flip_bit(path, offset_from_end: int = 1) -> None:
    content = bytearray(path.read_bytes())
    content[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(content))


def test_weights_changed_in_place_are_refused(built):
    model = copy(built, MODEL, "model-halved")
    weights = built.path / model / "model.safetensors"
    with open(weights, "rb") as f:  # the header as written, so that only one weight differs
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))["__metadata__"]
    state = load_file(weights)
    name = next(k for k in state if state[k].is_floating_point())
    state[name] = state[name] / 2
    size = weights.stat().st_size
    save_file(state, weights, metadata=header)
    assert weights.stat().st_size == size
    refused(evaluate(built, model=model), f"{model}/model.safetensors differs from what its stage wrote", "dvc pull")

    flipped = copy(built, MODEL, "model-flipped")
    flip_bit(built.path / flipped / "model.safetensors", 5)
    refused(evaluate(built, model=flipped), "model.safetensors differs from what its stage wrote")

    truncated = copy(built, MODEL, "model-truncated")
    weights = built.path / truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    refused(evaluate(built, model=truncated), "model.safetensors is corrupt or truncated")
    assert not (built.path / "reports/x").exists()


def test_weights_of_another_kind_or_not_finite_are_refused(built):
    agent = copy(built, AGENT, "model-as-agent")
    shutil.copy(built.path / MODEL / "model.safetensors", built.path / agent / "agent.safetensors")
    refused(evaluate(built, policy=agent), f"is not a {AGENT_FORMAT} file (found '{MODEL_FORMAT}')")

    from trajectory_transformer.training import load_model
    from trajectory_transformer.weights import save_weights
    model, metadata = load_model(built.path / MODEL)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # a diverged run, recorded faithfully
    diverged = copy(built, MODEL, "model-diverged")
    save_weights(model, built.path / diverged / "model.safetensors", MODEL_FORMAT, metadata)
    refused(evaluate(built, model=diverged), "holds non-finite weights")


def test_a_discretizer_edited_or_of_the_wrong_shape_is_refused(built):
    edited = copy(built, DISCRETIZER, "discretizer-edited")
    path = built.path / edited / "discretizer.json"
    text = path.read_text()
    at = text.index('"edges"') + text[text.index('"edges"'):].index(".") + 1  # a digit of the first edge
    path.write_text(text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:])
    refused(evaluate(built, discretizer=edited), "discretizer.json differs from what its stage wrote")

    path.write_text("[]")
    refused(evaluate(built, discretizer=edited), "is not a trajectory-transformer-discretizer/3 file (found 'list')")


def test_a_dataset_truncated_flipped_or_not_from_fetch_is_refused(built):
    truncated = copy(built, DATA, "data-truncated")
    data = built.path / truncated / "data/main_data.hdf5"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    refused(evaluate(built, data=truncated), f"{truncated}/data/main_data.hdf5 differs from what its stage wrote")

    flipped = copy(built, DATA, "data-flipped")
    flip_bit(built.path / flipped / "data/main_data.hdf5", 1000)
    refused(evaluate(built, data=flipped), "main_data.hdf5 differs from what its stage wrote")

    (built.path / flipped / "manifest.json").unlink()
    refused(evaluate(built, data=flipped), "has no manifest.json, so it was not written by this pipeline's stage")


def test_a_checkpoint_that_would_run_code_is_refused_unrun(built):
    marker = built.path / "scratch/ran"

    class Payload:
        def __reduce__(self):
            return (shutil.copy, (str(built.path / "params.yaml"), str(marker)))

    checkpoint = built.path / "scratch/checkpoint.pt"
    checkpoint.parent.mkdir(exist_ok=True)
    torch.save({"format": "trajectory-transformer-checkpoint/1", "payload": Payload()}, checkpoint)
    result = built.run(sys.executable, "-m", "stages.train", "--dataset", "reacher-medium", "--seed", "0", "--data", DATA,
                       "--discretizer", DISCRETIZER, "--out", "scratch/model", "--report", "scratch/report",
                       "--checkpoint", str(checkpoint), check=False)
    refused(result, "checkpoint.pt is corrupt or truncated (UnpicklingError)")
    assert not marker.exists() and not (built.path / "scratch/model").exists()


def files(folder) -> dict[str, bytes]:
    """A folder's content, but the .gitignore files DVC writes beside outputs."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".gitignore"}


KILLABLE = {  # a stage command writing its outputs (the second item) into OUT (the report: into the project)
    "fetch": (["stages.fetch", "--dataset", "reacher-medium", "--out", "OUT/data", "--metrics", "OUT/metrics.json"],
              ["data", "metrics.json"]),
    "discretize": (["stages.discretize", "--dataset", "reacher-medium", "--kind", "quantile", "--data", DATA, "--out", "OUT/d"], ["d"]),
    "bc": (["stages.agent", "--algorithm", "bc", "--dataset", "reacher-medium", "--seed", "0", "--data", DATA, "--out", "OUT/agent",
            "--report", "OUT/report", "--checkpoint", "OUT/checkpoint.pt"], ["agent", "report"]),
    "evaluate": (["stages.evaluate", "--dataset", "reacher-medium", "--seed", "0", "--data", DATA, "--discretizer", DISCRETIZER,
                  "--model", MODEL, "--out", "OUT/episodes", "--timing", "OUT/timing.json"], ["episodes"]),
    "report": (["stages.report"], ["reports/results", "reports/metrics.json"]),  # other runs show as missing
}


def content(path):
    return files(path) if path.is_dir() else path.read_bytes() if path.exists() else None


@pytest.mark.parametrize("stage", sorted(KILLABLE))
def test_a_stage_killed_midway_leaves_whole_outputs_only_and_its_rerun_is_identical(built, stage):
    """Killed at a seeded random point of an uninterrupted run's duration: each output is then
    absent or whole (never partial), and the rerun (bc resumes) equals the uninterrupted run."""
    command, outputs = KILLABLE[stage]
    whole, killed = built.path / "scratch" / f"whole-{stage}", built.path / "scratch" / f"killed-{stage}"
    into = {"whole": whole, "killed": killed} if "OUT" in " ".join(command) else {"whole": built.path, "killed": built.path}

    def argv(run):
        return [sys.executable, "-m", *(a.replace("OUT", str(into[run])) for a in command)]

    start = time.perf_counter()
    built.run(*argv("whole"))
    duration = time.perf_counter() - start
    expected = {name: content(into["whole"] / name) for name in outputs}
    if into["whole"] == into["killed"]:  # outputs at fixed paths: remove them, as DVC does before a stage runs
        for name in outputs:
            shutil.rmtree(built.path / name) if (built.path / name).is_dir() else (built.path / name).unlink()
    process = subprocess.Popen(argv("killed"), cwd=built.path, env=built.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(stage).uniform(0.4, 0.8) * duration)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for name in outputs:
        assert content(into["killed"] / name) in (None, expected[name]), f"{name} is partial after the kill"
    built.run(*argv("killed"))
    for name in outputs:
        assert content(into["killed"] / name) == expected[name], name
