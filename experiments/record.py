"""Keep a finished run in git: what it ran (params.yaml, dvc.lock) and what it measured.

    python experiments/record.py NAME --change "plan.context=2 on the goals suite" [--from PATH]

Experiment refs and branches live in one clone, and a DVC cache or remote can be lost; a recorded
run is a folder of small text files on main, so the figures the docs quote stay with the code
that produced them. Run it in the checkout (or scratch clone) whose workspace holds the finished
run; it writes experiments/NAME/ under this script's own checkout. A run of some targets only
(`dvc repro evaluate@...`) is recorded with the stages it left stale listed in run.json.
"""

import json
import platform
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import click
import yaml

HERE = Path(__file__).resolve().parent


def run(args: list[str], cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def cached(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


@click.command()
@click.argument("name")
@click.option("--change", required=True, help="What this run changed, against which baseline.")
@click.option("--from", "source", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."),
              help="The checkout whose workspace holds the run (default: here).")
def main(name: str, change: str, source: Path) -> None:
    source = source.resolve()
    folder = HERE / name
    if folder.exists():
        sys.exit(f"error: {folder} exists; choose another NAME or remove it")
    stale = sorted(json.loads(run(["dvc", "status", "--json"], source) or "{}"))
    locked = yaml.safe_load((source / "dvc.lock").read_text())["stages"]
    # each metric and the report as the lock recorded them (from the cache by their hashes): the
    # workspace can already hold another run's copy of an output this run shares with it
    cache = Path(run(["dvc", "cache", "dir"], source).strip())
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], source))
    metric_paths = next(iter(shown.values()), {}).get("data", {})
    metrics = {out["path"]: json.loads(cached(cache, out["md5"]).read_text())
               for stage, entry in locked.items() if stage not in stale
               for out in entry.get("outs", []) if out["path"] in metric_paths}
    report = None
    if "report" in locked and "report" not in stale:
        results = next(out for out in locked["report"]["outs"] if out["path"] == "reports/results")
        listing = json.loads(cached(cache, results["md5"]).read_text())
        report = next(cached(cache, entry["md5"]) for entry in listing if entry["relpath"] == "results.md")
    folder.mkdir(parents=True)
    for file in ("params.yaml", "dvc.lock"):
        shutil.copy(source / file, folder / file)
    if report is not None:
        shutil.copy(report, folder / "results.md")
    (folder / "metrics.json").write_text(json.dumps(dict(sorted(metrics.items())), indent=1) + "\n")
    (folder / "run.json").write_text(json.dumps({
        "name": name,
        "change": change,
        "commit": run(["git", "rev-parse", "HEAD"], source).strip(),
        "uncommitted": run(["git", "status", "--porcelain", "--untracked-files=no"], source).split("\n")[:-1],
        "stages_not_up_to_date": stale,
        "cpu": cpu_model(),
        "date": date.today().isoformat(),
    }, indent=1) + "\n")
    click.echo(f"recorded {folder}")


if __name__ == "__main__":
    main()
