import numpy as np
import pytest

from trajectory_transformer.discretization import DiscretizeSpec, Discretizer
from trajectory_transformer.errors import PipelineError


def fit(data, kind="quantile", **spec):
    return Discretizer.fit(data, kind, DiscretizeSpec(**spec), observation_dim=data.shape[1] - 3, action_dim=1)


@pytest.fixture
def continuous():
    rng = np.random.default_rng(0)
    return np.stack([rng.normal(size=20_000), rng.exponential(size=20_000),
                     rng.uniform(-1, 1, 20_000), rng.normal(5, 3, 20_000)], axis=1)


def test_quantile_bins_hold_equal_mass(continuous):
    discretizer = fit(continuous, kind="quantile", n_bins=50)
    tokens = discretizer.tokenize(continuous)
    for dim in range(continuous.shape[1]):
        counts = np.bincount(tokens[:, dim], minlength=50)
        assert counts.min() >= 399 and counts.max() <= 401  # 20000 / 50, up to rounding of ranks


@pytest.mark.parametrize("kind", ["quantile", "uniform"])
def test_tokenize_then_reconstruct_stays_within_half_a_bin(continuous, kind):
    discretizer = fit(continuous, kind=kind, n_bins=100, reconstruction="midpoint")
    tokens = discretizer.tokenize(continuous)
    width = np.take_along_axis(np.diff(discretizer.edges, axis=1), tokens.T, axis=1).T
    error = np.abs(discretizer.reconstruct(tokens) - continuous)
    assert np.all(error <= width / 2 + 1e-9)


def test_bin_mean_reconstruction_stays_inside_the_bin(continuous):
    discretizer = fit(continuous, n_bins=100)
    tokens = discretizer.tokenize(continuous)
    values = discretizer.reconstruct(tokens)
    low = np.take_along_axis(discretizer.edges, tokens.T, axis=1).T
    high = np.take_along_axis(discretizer.edges, tokens.T + 1, axis=1).T
    assert np.all((values >= low - 1e-9) & (values <= high + 1e-9))


def sparse_column_data(rewards):
    rng = np.random.default_rng(1)
    n = len(rewards)
    return np.stack([rng.normal(size=n), rng.normal(size=n), rewards, rng.normal(size=n)], axis=1)


@pytest.mark.parametrize("kind", ["quantile", "uniform"])
@pytest.mark.parametrize("reconstruction", ["bin-mean", "midpoint"])
@pytest.mark.parametrize("column", ["ones at 0.5 %", "penalty at 0.2 %"])
def test_sparse_bins_keep_every_distinct_value_apart(kind, reconstruction, column):
    # AntMaze large after relabeling: a reward of 1 on fewer than 1/n_bins of the steps shared the
    # last quantile bin with the zeros, and -100 penalties shared a uniform bin with them
    rewards = np.zeros(20_000)
    rewards[:100] = 1.0  # 0.5 %
    if column == "penalty at 0.2 %":
        rewards[100:140] = -100.0
    discretizer = fit(sparse_column_data(rewards), kind=kind, n_bins=100, reconstruction=reconstruction)
    values = np.unique(rewards)
    probe = np.zeros((len(values), 4))
    probe[:, 2] = values
    tokens = discretizer.tokenize(probe)[:, 2]
    assert len(set(tokens.tolist())) == len(values)
    assert discretizer.table[2, tokens].tolist() == values.tolist()  # each decodes to itself
    assert discretizer.categorical.tolist() == [False, False, True, False]


def test_discrete_actions_get_a_bin_each_and_decode_exactly():
    rng = np.random.default_rng(2)
    actions = rng.integers(0, 4, size=5000).astype(float)  # MiniGrid's four actions
    data = np.stack([rng.normal(size=5000), actions, rng.normal(size=5000), rng.normal(size=5000)], axis=1)
    discretizer = Discretizer.fit(data, "quantile", DiscretizeSpec(n_bins=10, reconstruction="midpoint"), 1, 1)
    assert np.array_equal(discretizer.reconstruct(discretizer.tokenize(data)[:, 1:2], slice(1, 2))[:, 0], actions)


def test_out_of_range_values_go_to_the_first_and_last_bin(continuous):
    discretizer = fit(continuous, n_bins=10)
    tokens = discretizer.tokenize(np.array([[-1e9] * 4, [1e9] * 4]))
    assert tokens.tolist() == [[0] * 4, [9] * 4]


def test_expectation_weights_the_reconstruction_table(continuous):
    discretizer = fit(continuous, n_bins=4)
    probabilities = np.array([0.5, 0.0, 0.25, 0.25])
    expected = 0.5 * discretizer.table[3, 0] + 0.25 * discretizer.table[3, 2] + 0.25 * discretizer.table[3, 3]
    assert discretizer.expectation(probabilities, dim=3) == pytest.approx(expected)


def test_the_artifact_round_trips_and_rejects_corruption(continuous, tmp_path):
    discretizer = fit(continuous, n_bins=30)
    discretizer.save(tmp_path / "d.json")
    loaded = Discretizer.load(tmp_path / "d.json")
    assert np.array_equal(loaded.edges, discretizer.edges)
    assert np.array_equal(loaded.table, discretizer.table)
    assert np.array_equal(loaded.categorical, discretizer.categorical)
    (tmp_path / "d.json").write_text((tmp_path / "d.json").read_text()[:500])
    with pytest.raises(PipelineError, match="corrupt"):
        Discretizer.load(tmp_path / "d.json")
    with pytest.raises(PipelineError, match="discretize stage"):
        Discretizer.load(tmp_path / "missing.json")
