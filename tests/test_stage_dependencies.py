"""Each stage lists exactly the library modules it runs, so editing one reruns exactly the
stages that use it: the imports of every stage script, followed through the library, must equal
its `deps` in dvc.yaml."""

import ast
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "trajectory_transformer"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            if node.module == PACKAGE:
                names |= {f"{PACKAGE}.{alias.name}" for alias in node.names if (ROOT / PACKAGE / f"{alias.name}.py").exists()}
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE}
    return names


def closure(script: Path) -> set[str]:
    seen, todo = set(), [script]
    while todo:
        for module in imported_modules(todo.pop()):
            file = ROOT / (module.replace(".", "/") + ".py") if module != PACKAGE else ROOT / PACKAGE / "__init__.py"
            if file not in seen:
                seen.add(file)
                todo.append(file)
    seen.add(ROOT / PACKAGE / "__init__.py")  # importing any submodule runs the package's __init__
    return {f.relative_to(ROOT).as_posix() for f in seen}


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_exactly_the_modules_it_imports(stage):
    definition = STAGES[stage].get("do") or STAGES[stage]
    script = "stages/" + re.search(r"python -m stages\.(\w+)", definition["cmd"]).group(1) + ".py"
    deps = definition["deps"]
    listed = {d for d in deps if d.startswith(f"{PACKAGE}/")}
    assert script in deps
    assert listed == closure(ROOT / script)


def test_lock_names_only_stages_of_the_pipeline():
    """DVC never prunes dvc.lock: an entry of a renamed or removed stage would describe nothing."""
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=ROOT, capture_output=True, text=True, check=True)
    locked = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    assert set(locked) <= set(listed.stdout.split())
