import json

import pytest

from trajectory_transformer.reporting import (
    OTHER_PUBLISHED, collect, interquartile_mean, method_folders, published_table, score_table,
)


def episodes(root, dataset, kind, seed, scores, successes=None):
    path = root / dataset / kind / f"seed-{seed}" / "episodes.json"
    path.parent.mkdir(parents=True)
    successes = successes or [False] * len(scores)
    path.write_text(json.dumps({"episodes": [{"normalized_score": s, "success": ok} for s, ok in zip(scores, successes)]}))


@pytest.fixture
def results(tmp_path):
    episodes(tmp_path, "A", "quantile", 0, [10.0, 20.0])
    episodes(tmp_path, "A", "quantile", 1, [30.0])
    episodes(tmp_path, "A", "uniform", 0, [40.0, 40.0])
    episodes(tmp_path, "B", "uniform", 0, [5.0, 15.0])
    episodes(tmp_path, "M", "quantile", 0, [0.0, 0.0, 0.0, 0.0], successes=[True, False, True, True])
    episodes(tmp_path, "M", "uniform", 0, [0.0, 0.0], successes=[False, False])
    episodes(tmp_path, "M", "tt-q-quantile", 0, [0.0, 0.0], successes=[True, True])
    episodes(tmp_path, "M", "bc", 1, [0.0, 0.0], successes=[True, False])
    return collect(tmp_path, ["A", "B", "M"], method_folders(["quantile", "uniform"]), [0, 1])


def test_the_table_is_exactly_the_hand_computed_one(results):
    # A quantile: 10, 20, 30 -> mean 20, sd 10, se 10 / sqrt(3) = 5.77; B has no quantile run
    assert score_table(results, ["A", "B"], ["TT (quantile)", "TT (uniform)"], maze=False) == (
        "| dataset | TT (quantile) | TT (uniform) |\n"
        "|---|---|---|\n"
        "| A | 20.0 ± 5.8 | **40.0 ± 0.0** |\n"
        "| B | missing | 10.0 ± 5.0 |\n"
        "| **average** | 20.0 (1 of 2) | 25.0 |\n"
    )


def test_mazes_report_success_not_return(results):
    # 3 of 4 successes: 75 ± 100 * sqrt(0.25 * 4 / 3) / sqrt(4) = 25.0
    assert score_table(results, ["M"], ["TT (quantile)", "TT (uniform)", "TT+Q (quantile)", "IQL", "BC"], maze=True).splitlines()[2] == \
        "| M | 75.0 ± 25.0 | 0.0 ± 0.0 | **100.0 ± 0.0** | missing | 50.0 ± 50.0 |"
    assert results["M"]["BC"].seeds == 1
    assert results["A"]["TT (quantile)"].seeds == 2


def test_published_numbers_stay_apart_and_only_for_known_rows():
    table = published_table(["hopper-medium", "reacher-medium", "antmaze-umaze"])
    assert "| hopper-medium | TT (quantile) | 61.1 ± 3.6 |" in table
    assert "| antmaze-umaze | TT+Q (quantile) | 100.0 ± 0.0 |" in table
    assert "CORL" not in table  # the paper's numbers only
    assert "| antmaze-umaze | IQL (CORL, AntMaze v2) | 77.0 |" in published_table(["antmaze-umaze"], OTHER_PUBLISHED)
    assert "reacher" not in table
    assert published_table(["reacher-medium"]) is None


def test_interquartile_mean_counts_its_runs(results):
    summary = interquartile_mean(results, ["TT (quantile)", "TT (uniform)"], maze_datasets={"M"})
    # quantile: 10, 20, 30 and successes 100, 0, 100, 100 -> 7 episodes
    assert summary["TT (quantile)"]["episodes"] == 7
    assert summary["TT (quantile)"]["ci95_low"] <= summary["TT (quantile)"]["iqm"] <= summary["TT (quantile)"]["ci95_high"]
    assert summary == interquartile_mean(results, ["TT (quantile)", "TT (uniform)"], maze_datasets={"M"})  # seeded
