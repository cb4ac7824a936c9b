"""Tables and figures from our own evaluation files, with the paper's numbers beside them.

Our numbers and the published ones are never mixed in one table. A cell is the mean ± standard
error over every episode of every seed of a (dataset, method); a run that is missing is shown as
missing, never as zero. Maze datasets report the success rate (x 100), not the return.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# published system §5: the paper's Table 1 (D4RL v2, normalized return) and Table 2 (AntMaze v0, success %).
PUBLISHED = {
    "TT (quantile)": {
        "halfcheetah-medium-expert": (95.0, 0.2), "hopper-medium-expert": (110.0, 2.7), "walker2d-medium-expert": (101.9, 6.8),
        "halfcheetah-medium": (46.9, 0.4), "hopper-medium": (61.1, 3.6), "walker2d-medium": (79.0, 2.8),
        "halfcheetah-medium-replay": (41.9, 2.5), "hopper-medium-replay": (91.5, 3.6), "walker2d-medium-replay": (82.6, 6.9),
    },
    # paper section 4.2: likelihood beam search on expert data (the paper gives no error bars)
    "TT imitation (quantile)": {"hopper-expert": (104.0, float("nan")), "walker2d-expert": (109.0, float("nan"))},
    # appendix F: MiniGrid MultiRoom-N4-S5, goals reached on held-out maps (%)
    "TT goal reaching (quantile)": {"minigrid-multiroom": (94.0, float("nan"))},
    "TT+Q (quantile)": {
        "antmaze-umaze": (100.0, 0.0), "antmaze-medium-play": (93.3, 6.4), "antmaze-medium-diverse": (100.0, 0.0),
        "antmaze-large-play": (66.7, 12.2), "antmaze-large-diverse": (60.0, 12.7),
    },
}
# Not the paper: CORL's IQL on AntMaze v2 (4 seeds, last checkpoint; published system §6 quotes its means)
OTHER_PUBLISHED = {
    "IQL (CORL, AntMaze v2)": {
        "antmaze-umaze": (77.0, float("nan")), "antmaze-medium-play": (65.8, float("nan")),
        "antmaze-medium-diverse": (73.8, float("nan")), "antmaze-large-play": (42.0, float("nan")),
        "antmaze-large-diverse": (30.3, float("nan")),
    },
}
PUBLISHED_AVERAGES = {"Table 1": {"TT (quantile)": 78.9, "TT (uniform)": 72.6, "BC": 47.7, "CQL": 77.6, "DT": 74.7},
                      "Table 2": {"TT+Q": 84.0, "IQL": 63.2, "CQL": 44.9, "DT": 11.8, "BC": 10.9}}


def mean_and_stderr(values) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n); 0 for a single value)."""
    values = np.asarray(values, dtype=float)
    error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(error)


@dataclass
class Result:
    """Every episode of one (dataset, method): normalized scores, successes, and how many seeds."""

    scores: list[float]
    successes: list[bool]
    seeds: int

    def cell(self, maze: bool) -> tuple[float, float]:
        return mean_and_stderr(np.array(self.successes, float) * 100 if maze else self.scores)


def method_folders(kinds: list[str]) -> dict[str, str]:
    """Method of each evaluation folder (`dvc.yaml` names them), in table column order."""
    return {**{kind: f"TT ({kind})" for kind in kinds}, **{f"tt-q-{kind}": f"TT+Q ({kind})" for kind in kinds},
            **{f"imitation-{kind}": f"TT imitation ({kind})" for kind in kinds}, "iql": "IQL", "bc": "BC"}


def collect(evaluate_root: Path, datasets: list[str], folders: dict[str, str], seeds: list[int]) -> dict[str, dict[str, Result]]:
    """results[dataset][method] from `evaluate_root/<dataset>/<folder>/seed-<s>/episodes.json`;
    a (dataset, method) with no seed evaluated is absent."""
    results: dict[str, dict[str, Result]] = {}
    for dataset in datasets:
        for folder, method in folders.items():
            scores, successes, found = [], [], 0
            for seed in seeds:
                path = Path(evaluate_root) / dataset / folder / f"seed-{seed}" / "episodes.json"
                if path.exists():
                    episodes = json.loads(path.read_text())["episodes"]
                    scores += [e["normalized_score"] for e in episodes]
                    successes += [bool(e["success"]) for e in episodes]
                    found += 1
            if found:
                results.setdefault(dataset, {})[method] = Result(scores, successes, found)
    return results


def score_table(results: dict[str, dict[str, Result]], datasets: list[str], methods: list[str], maze: bool) -> str:
    """Markdown: a row per dataset, a column per method, the best mean of a row in bold, and an
    average row over the datasets a method has results for (marked when some are missing)."""
    header = "| dataset | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods) + "\n"
    rows, column_means = [], {m: [] for m in methods}
    for dataset in datasets:
        cells = {m: results.get(dataset, {}).get(m) for m in methods}
        means = {m: r.cell(maze)[0] for m, r in cells.items() if r is not None}
        best = max(means.values()) if means else None
        texts = []
        for method in methods:
            if cells[method] is None:
                texts.append("missing")
                continue
            mean, error = cells[method].cell(maze)
            column_means[method].append(mean)
            text = f"{mean:.1f} ± {error:.1f}"
            texts.append(f"**{text}**" if len(means) > 1 and np.isclose(mean, best) else text)
        rows.append(f"| {dataset} | " + " | ".join(texts) + " |")
    averages = []
    for method in methods:
        values = column_means[method]
        if not values:
            averages.append("missing")
        else:
            note = "" if len(values) == len(datasets) else f" ({len(values)} of {len(datasets)})"
            averages.append(f"{np.mean(values):.1f}{note}")
    rows.append("| **average** | " + " | ".join(averages) + " |")
    return header + "\n".join(rows) + "\n"


def published_table(datasets: list[str], published: dict = PUBLISHED) -> str | None:
    """Published numbers (the paper's by default) for the rows we have, clearly apart from ours;
    None if none match."""
    rows = [(d, m, published[m][d]) for d in datasets for m in published if d in published[m]]
    if not rows:
        return None
    lines = ["| dataset | method | published |", "|---|---|---|"]
    lines += [f"| {d} | {m} | {mean:.1f}{'' if np.isnan(error) else f' ± {error:.1f}'} |" for d, m, (mean, error) in rows]
    return "\n".join(lines) + "\n"


def interquartile_mean(results: dict[str, dict[str, Result]], methods: list[str], maze_datasets: set[str]) -> dict:
    """Per method: the interquartile mean of all its episode scores with a 95% bootstrap
    confidence interval (seeded), and the number of runs behind it."""
    from scipy import stats  # noqa: PLC0415 (0.6 s to import, for the report alone: not at every stage's start)

    summary = {}
    for method in methods:
        values = []
        for dataset, by_method in results.items():
            if method in by_method:
                r = by_method[method]
                values += [100.0 * s for s in r.successes] if dataset in maze_datasets else r.scores
        if not values:
            continue
        values = np.array(values, dtype=float)
        iqm = float(stats.trim_mean(values, 0.25))
        if len(values) > 2 and np.ptp(values) > 0:
            interval = stats.bootstrap((values,), lambda v, axis: stats.trim_mean(v, 0.25, axis=axis), confidence_level=0.95,
                                       n_resamples=2000, random_state=np.random.default_rng(0), method="percentile").confidence_interval
            low, high = float(interval.low), float(interval.high)
        else:
            low = high = iqm
        summary[method] = {"iqm": iqm, "ci95_low": low, "ci95_high": high, "episodes": int(len(values))}
    return summary
