"""The pipeline's stages in levels for a scheduler: every stage's upstream stages sit in earlier
levels, so a level's stages can run at once, each on its own node, once the level before it is
done. Read from DVC's own graph of the checkout's dvc.yaml and params.yaml.

    python cluster/stage_levels.py            # one line per level: its stage names
    python cluster/stage_levels.py 2 5        # the stage of array task 5 in level 2
"""

import sys
from pathlib import Path

from dvc.repo import Repo


def stage_levels(root: str | Path = ".") -> list[list[str]]:
    graph = Repo(str(root)).index.graph  # an edge runs from a stage to a stage it depends on
    level: dict = {}

    def depth(stage) -> int:
        if stage not in level:
            level[stage] = 1 + max((depth(upstream) for upstream in graph.successors(stage)), default=-1)
        return level[stage]

    levels: list[list[str]] = []
    for stage in graph.nodes:
        if stage.cmd:  # .dvc files of imported data have nothing to run
            d = depth(stage)
            levels.extend([] for _ in range(d + 1 - len(levels)))
            levels[d].append(stage.name)
    return [sorted(names) for names in levels if names]


def main(argv: list[str]) -> None:
    levels = stage_levels()
    if not argv:
        print("\n".join(" ".join(names) for names in levels))
    elif len(argv) == 2 and all(a.isdigit() for a in argv) and int(argv[0]) < len(levels) and int(argv[1]) < len(levels[int(argv[0])]):
        print(levels[int(argv[0])][int(argv[1])])
    else:
        sys.exit(f"usage: stage_levels.py [LEVEL TASK] (LEVEL < {len(levels)}, TASK < that level's stage count)")


if __name__ == "__main__":
    main(sys.argv[1:])
