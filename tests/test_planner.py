from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trajectory_transformer.datasets import Transitions
from trajectory_transformer.discretization import DiscretizeSpec, Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.model import ModelConfig, TrajectoryTransformer
from trajectory_transformer.planner import PlannerSpec, drop_duplicates, filter_logits, make_decoder, plan
from trajectory_transformer.trajectories import SequenceSpec, joined_paths, path_bounds
from trajectory_transformer.training import ArchitectureSpec, OptimSpec, RunIdentity, RunSpec, TrainSpec, load_model, tokenize_paths, train


def random_setup(position_embedding="rotary", goal_dims=(), map_shape=()):
    torch.manual_seed(0)
    N, M, V = 3, 2, 10
    config = ModelConfig(observation_dim=N, action_dim=M, n_bins=V, window=6, n_layer=2, n_head=2, n_embd=16,
                         dropout=0.0, position_embedding=position_embedding, goal_dims=list(goal_dims),
                         map_shape=list(map_shape), map_codes=3 if map_shape else 0)
    model = TrajectoryTransformer(config).eval()
    if goal_dims:  # trained goal embeddings are not zero: make the prefix matter
        torch.nn.init.normal_(model.goal_position_embedding, std=1.0)
    data = np.random.default_rng(0).normal(size=(500, N + M + 2))
    discretizer = Discretizer.fit(data, "quantile", DiscretizeSpec(n_bins=V), N, M)
    prefix = torch.randint(0, V, (3, 3 * config.transition_dim + N), generator=torch.Generator().manual_seed(1))
    return model, discretizer, prefix


@pytest.mark.parametrize(("mode", "n_expand", "conditioned"),
                         [("reward", 3, False), ("likelihood", 3, False), ("reward", 1, False), ("likelihood", 2, True)])
def test_cached_planning_equals_the_uncached_oracle(mode, n_expand, conditioned):
    """Same window policy, same seed: the same sequence, and every generated token's
    log-probability within 1e-4 of a full recomputation (the window slides: horizon > context).
    With n_expand 1 every key goes to the beams' own room; with more, actions go to fresh buffers.
    Goal reaching with a map: the cached crop against the uncached one."""
    model, discretizer, prefix = random_setup(**({"goal_dims": [0, 2], "map_shape": [5, 5]} if conditioned else {}))
    goal, maps = goal_and_maps(prefix.shape[0]) if conditioned else (None, None)
    spec = PlannerSpec(mode=mode, horizon=5, beam_width=6, n_expand=n_expand, context=3)
    cached = plan(model, discretizer, replace(spec, cached=True), prefix, torch.Generator().manual_seed(0), goal=goal, maps=maps)
    full = plan(model, discretizer, replace(spec, cached=False), prefix, torch.Generator().manual_seed(0), goal=goal, maps=maps)
    assert torch.equal(cached.actions, full.actions)
    assert torch.allclose(cached.token_log_probs, full.token_log_probs, atol=1e-4)
    assert torch.allclose(cached.scores, full.scores, atol=1e-4)
    # the log-probabilities are those of the model on the chosen sequence, recomputed from scratch
    assert cached.token_log_probs.shape == (3, 5 * model.config.transition_dim - model.config.observation_dim)


def goal_and_maps(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randint(0, 10, (rows, 2), generator=generator), torch.randint(0, 3, (rows, 5, 5), generator=generator)


@pytest.mark.parametrize("conditioned", [False, True])
def test_every_decoder_follows_one_protocol_through_expansion_and_selection(conditioned):
    """The same expand / append / select sequence through the three decoders: the cached sliding
    window equals the uncached one, and the cached crop equals the uncached crop, within 1e-5.
    A goal- and map-conditioned model always crops: its cache keeps the goal prefix's keys and
    adds the map embedding to every stepped token."""
    if conditioned:
        model, _, prefix = random_setup(goal_dims=[0, 2], map_shape=[5, 5])
        goal, maps = goal_and_maps(prefix.shape[0])
        pairs = [(make_decoder(model, 3, prefix, cached=True, goal=goal, maps=maps),
                  make_decoder(model, 3, prefix, cached=False, goal=goal, maps=maps))]
    else:
        model, _, prefix = random_setup()
        pairs = [(make_decoder(model, 3, prefix, cached=True, crop=crop), make_decoder(model, 3, prefix, cached=False, crop=crop))
                 for crop in (False, True)]
    assert [type(a).__name__ for a, _ in pairs] == (["CroppedDecoder"] if conditioned else ["CachedDecoder", "CroppedDecoder"])
    D = model.config.transition_dim
    generator = torch.Generator().manual_seed(3)
    R, X = 1, 1
    for step in range(2 * D + 3):  # past two transition ends, so the windows move
        if step % D == 0:  # expand, then keep a random choice of candidates
            X = 3
            for pair in pairs:
                for decoder in pair:
                    decoder.expand(X)
        tokens = torch.randint(0, model.config.n_bins, (3, R, X), generator=generator)
        for cached, full in pairs:
            assert torch.allclose(cached.logits(), full.logits(), atol=1e-5)
            cached.append(tokens), full.append(tokens)
        if step % D == D - 3:
            beam = torch.randint(0, R, (3, 2), generator=generator)
            expansion = torch.randint(0, X, (3, 2), generator=generator)
            for pair in pairs:
                for decoder in pair:
                    decoder.select(beam, expansion)
            R, X = 2, 1
    for cached, full in pairs:
        assert torch.allclose(cached.logits(), full.logits(), atol=1e-5)


def test_imitation_search_is_the_published_token_beam_search():
    # the paper's imitation: every beam times every bin token, the beam_width most likely kept.
    # With one planned transition (two action tokens) and beam_width >= V, it is exhaustive:
    # its answer is the most likely of all V^2 action pairs, scored by full forward passes
    model, discretizer, prefix = random_setup()
    V = model.config.n_bins
    spec = PlannerSpec(mode="beam", horizon=1, beam_width=V, context=3, cached=False)
    result = plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = model(prefix, context=3)[:, -1].log_softmax(-1)[:, :V]  # (E, V): bins only, normalized as the model is
        pairs = torch.cat([prefix.repeat_interleave(V, 0), torch.arange(V).repeat(3)[:, None]], dim=1)
        second = model(pairs, context=3)[:, -1].log_softmax(-1)[:, :V].view(3, V, V)
    total = first[:, :, None] + second
    best = total.flatten(1).argmax(-1)
    assert torch.equal(result.actions[:, 0], torch.stack([best // V, best % V], dim=-1))
    assert torch.allclose(result.scores, total.flatten(1).max(-1).values, atol=1e-5)
    # deterministic, and the cache gives the same plans over a window that slides
    longer = replace(spec, horizon=4, beam_width=5)
    full = plan(model, discretizer, longer, prefix, torch.Generator().manual_seed(0))
    cached = plan(model, discretizer, replace(longer, cached=True), prefix, torch.Generator().manual_seed(1))
    assert torch.equal(full.actions, cached.actions) and torch.allclose(full.scores, cached.scores, atol=1e-4)


def test_candidate_collision_different_beams_with_any_actions_are_kept():
    # hopper has 3 action dims and 101 tokens: the former key parent_hash * 1_000_003 +
    # sum(a_i 101^i) gave beam 1 with actions (0, 0, 0) and beam 0 with (2, 3, 98) the same
    # key (1,000,003 both), and dropped a real candidate. Keys are now compared exactly.
    assert 1 * 1_000_003 + 0 == 0 * 1_000_003 + 2 + 3 * 101 + 98 * 101**2
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    parents = torch.tensor([[1, 0, 0]])
    actions = torch.tensor([[[0, 0, 0], [2, 3, 98], [2, 3, 98]]])
    assert drop_duplicates(scores, parents, actions).tolist() == [[1.0, 2.0, float("-inf")]]


def test_planning_is_deterministic_for_a_seed_and_varies_with_it():
    model, discretizer, prefix = random_setup()
    spec = PlannerSpec(horizon=3, beam_width=4, n_expand=2, context=3, action_cdf=None)
    first = plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(3))
    again = plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(3))
    assert torch.equal(first.actions, again.actions)
    others = [plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(s)).actions for s in range(4, 9)]
    assert any(not torch.equal(first.actions, other) for other in others)


def test_the_published_uncached_path_with_learned_positions_runs():
    model, discretizer, prefix = random_setup("learned")
    spec = PlannerSpec(horizon=3, beam_width=4, n_expand=2, context=3, cached=False)
    result = plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(0))
    assert result.actions.shape == (3, 3, 2)
    with pytest.raises(PipelineError, match="rotary"):
        PlannerSpec(cached=True).check(model)
    with pytest.raises(PipelineError, match="exceeds the model's window"):
        PlannerSpec(context=7, cached=False).check(model)


def test_the_probability_mass_rule_drops_the_least_likely_tokens():
    logits = torch.log(torch.tensor([0.05, 0.1, 0.15, 0.3, 0.4]))
    kept = filter_logits(logits, cdf=0.6, top_k=None).isfinite().tolist()
    # cumulative ascending mass 0.05, 0.15, 0.30 stays below 0.6: those tokens go (as published)
    assert kept == [False, False, False, True, True]
    assert filter_logits(logits, cdf=None, top_k=2).isfinite().tolist() == [False, False, False, True, True]
    assert filter_logits(logits, cdf=0.99, top_k=None).isfinite().tolist() == [False, False, False, False, True]


def train_toy(tmp_path, transitions: Transitions, n_bins: int = 8, goal_dims: list[int] = ()):
    sequence = SequenceSpec(discount=0.9, window=3, max_path_length=10)
    joined = np.concatenate(joined_paths(transitions, sequence))
    discretizer = Discretizer.fit(joined, "uniform", DiscretizeSpec(n_bins=n_bins), transitions.observations.shape[1],
                                  transitions.actions.shape[1])
    spec = TrainSpec(model=ArchitectureSpec(n_layer=2, n_head=2, n_embd=32, dropout=0.0, position_embedding="rotary"),
                     optim=OptimSpec(learning_rate=3e-3, batch_size=32, max_updates=300, warmup_updates=20),
                     run=RunSpec(eval_every=300, checkpoint_every=1000, device="cpu", cpu_threads=2))
    # a toy walk's last row is its final state: its goal
    goals = np.stack([transitions.observations[end - 1, list(goal_dims)] for _, end in path_bounds(transitions, 10)]) if goal_dims else None
    train(tokenize_paths(transitions, discretizer, sequence), discretizer, sequence, spec,
          RunIdentity("toy", "a", "b", "uniform", 0, goal_dims=list(goal_dims)), tmp_path / "m", tmp_path / "r", tmp_path / "c.pt",
          progress=False, path_goals=goals)
    return load_model(tmp_path / "m")[0], discretizer


def paths(rows: list[list[tuple]]) -> Transitions:
    """Transitions from paths of (observation, action, reward) rows; each path ends in a time-out."""
    flat = [row for path in rows for row in path]
    ends = np.cumsum([len(p) for p in rows]) - 1
    timeouts = np.zeros(len(flat), bool)
    timeouts[ends] = True
    return Transitions(np.array([[r[0]] for r in flat], np.float32), np.array([[r[1]] for r in flat], np.float32),
                       np.array([r[2] for r in flat], np.float32), np.zeros(len(flat), bool), timeouts)


@pytest.fixture(scope="module")
def two_branches(tmp_path_factory):
    """From state 0 the data take action 0 (reward 0, on to state 1) or action 7 (reward 7, on
    to state 3) equally often."""
    data = paths([[(0, 0, 0), (1, 0, 0), (2, 0, 0)], [(0, 7, 7), (3, 0, 0), (4, 0, 0)]] * 40)
    model, discretizer = train_toy(tmp_path_factory.mktemp("branches"), data)
    prefix = torch.tensor([[int(discretizer.tokenize(np.array([0.0]), slice(0, 1))[0])]])
    return model, discretizer, prefix


def first_action(two_branches, critic=None, **spec) -> float:
    model, discretizer, prefix = two_branches
    spec = PlannerSpec(**{"horizon": 2, "beam_width": 8, "n_expand": 4, "context": 2, "action_cdf": None, **spec})
    result = plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(0), critic=critic)
    return float(discretizer.reconstruct(result.actions[0, 0].numpy(), slice(1, 2))[0])


def test_reward_mode_takes_the_higher_reward_branch(two_branches):
    assert first_action(two_branches) == pytest.approx(7.0)


@pytest.mark.parametrize("seed", range(6))
def test_the_search_starts_from_beam_width_samples_of_the_first_action(two_branches, seed):
    """As published: beam_width copies of the context, so with n_expand 1 and a one-step horizon
    the 8 first-action samples include the rewarding one (a single sample misses it half the
    time: with probability 1/256 all eight do)."""
    model, discretizer, prefix = two_branches
    spec = PlannerSpec(horizon=1, beam_width=8, n_expand=1, context=2, action_cdf=None)
    for distinct in (True, False):
        result = plan(model, discretizer, replace(spec, distinct_candidates=distinct), prefix, torch.Generator().manual_seed(seed))
        assert discretizer.reconstruct(result.actions[0, 0].numpy(), slice(1, 2))[0] == pytest.approx(7.0)


class PrefersTheSmallAction:
    """A handcrafted critic that disagrees with the rewards: Q(s, a) = -10 a, V(s) = -10 s."""

    def q(self, observations, actions):
        return -10 * actions[..., 0]

    def v(self, observations):
        return -10 * observations[..., 0]


@pytest.mark.parametrize("critic_score", ["q", "v"])
def test_a_critic_overrides_the_value_token(two_branches, critic_score):
    # q: Q(0, 0) = 0 beats Q(0, 7) = -70. v: 0 + 0.99 V(1) = -9.9 beats 7 + 0.99 V(3) = -22.7,
    # with the next state decoded by the model for each candidate
    critic = PrefersTheSmallAction()
    assert first_action(two_branches, critic, horizon=1, critic_score=critic_score) == pytest.approx(0.0)
    assert first_action(two_branches, None, horizon=1) == pytest.approx(7.0)


def test_a_critic_with_the_uncached_oracle_plans_the_same(two_branches):
    model, discretizer, prefix = two_branches
    for critic_score, n_expand in (("q", 2), ("v", 2), ("v", 1)):
        spec = PlannerSpec(horizon=3, beam_width=4, n_expand=n_expand, context=2, action_cdf=None, critic_score=critic_score)
        cached = plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(1), critic=PrefersTheSmallAction())
        full = plan(model, discretizer, replace(spec, cached=False), prefix, torch.Generator().manual_seed(1), critic=PrefersTheSmallAction())
        assert torch.equal(cached.actions, full.actions)
        assert torch.allclose(cached.token_log_probs, full.token_log_probs, atol=1e-4)


def test_a_critic_needs_reward_mode(two_branches):
    with pytest.raises(PipelineError, match="reward-mode"):
        PlannerSpec(mode="likelihood").check(two_branches[0], PrefersTheSmallAction())


def test_a_single_candidate_executes_a_draw_from_the_models_action_distribution():
    """The goals suite's MiniGrid planner (as conf/suite/goals.yaml composes it: horizon 1, one
    beam, one expansion, no mass rule): the executed first action token is distributed as the
    model's own prediction, goal and map read, not its most likely token (a deterministic policy
    loops in a deterministic grid)."""
    suite = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf/suite/goals.yaml").read_text())
    spec = PlannerSpec(**{**suite["plan"], **suite["datasets"]["minigrid-multiroom"]["plan"]})
    model, discretizer, prefix = random_setup(goal_dims=[0, 2], map_shape=[5, 5])
    rows = 4000
    prefix = prefix[:1].expand(rows, -1)
    goal, maps = (t[:1].expand(rows, *t.shape[1:]) for t in goal_and_maps(1))
    drawn = plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(0), goal=goal, maps=maps).actions[:, 0, 0]
    V = model.config.n_bins
    predicted = make_decoder(model, spec.context, prefix[:1], cached=False, goal=goal[:1],
                             maps=maps[:1]).logits()[0, 0, 0, :V].softmax(-1)
    frequencies = torch.bincount(drawn, minlength=V) / rows
    assert 0.5 * (frequencies - predicted).abs().sum() < 0.05  # total variation; about 0.02 expected by chance
    assert predicted.max() < 0.5  # a test of drawing, not of a model that is nearly deterministic


def test_likelihood_mode_imitates_a_deterministic_expert(tmp_path):
    # the expert's action equals the state; states visit 0..7 in shuffled order
    rng = np.random.default_rng(0)
    data = paths([[(s, s, 0) for s in rng.permutation(8)[:4]] for _ in range(120)])
    model, discretizer = train_toy(tmp_path, data)
    spec = PlannerSpec(mode="likelihood", horizon=2, beam_width=8, n_expand=4, context=2)
    states = np.arange(8, dtype=float)
    prefix = torch.from_numpy(discretizer.tokenize(states[:, None], slice(0, 1)))
    result = plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(0))
    actions = discretizer.reconstruct(result.actions[:, 0].numpy(), slice(1, 2))[:, 0]
    assert np.allclose(actions, discretizer.reconstruct(prefix.numpy(), slice(0, 1))[:, 0])


def test_goal_conditioned_mode_heads_for_the_goal(tmp_path):
    """A line world: positions 0..7, actions move -1 (token 0) or +1 (token 7); random walks.
    Conditioned on the final state, the first planned move points at the goal."""
    rng = np.random.default_rng(0)
    walks = []
    for _ in range(300):
        position, walk = int(rng.integers(1, 7)), []
        for _ in range(3):
            move = int(rng.choice([-1, 1])) if 0 < position < 7 else (1 if position == 0 else -1)
            walk.append((position, 0 if move < 0 else 7, 0))
            position += move
        walk.append((position, 0, 0))
        walks.append(walk)
    model, discretizer = train_toy(tmp_path, paths(walks), goal_dims=[0])
    spec = PlannerSpec(mode="likelihood", horizon=1, beam_width=8, n_expand=8, context=2, cached=False, action_cdf=None)
    start = torch.tensor([[3], [3], [5], [2]])
    goal = torch.tensor([[6], [0], [7], [0]])
    result = plan(model, discretizer, spec, start, torch.Generator().manual_seed(0), goal=goal)
    moves = result.actions[:, 0, 0].tolist()
    assert moves == [7, 0, 7, 0]


class Handcrafted:
    """A model whose distributions are written by hand (1 observation dim, 1 action dim, 4 bins).
    After observation 0 the action is 0 with probability 0.6, else 1 (after any other observation,
    0 surely); rewards and values are 0 surely; after action 0 the next observation is uniform,
    after action 1 it is 2 surely. So the likelier first action (0) starts the less likely
    two-step sequence: 0.6 x 0.25 x 0.6 = 0.09 against 0.4 x 1 x 1 = 0.4."""

    config = ModelConfig(observation_dim=1, action_dim=1, n_bins=4, window=4, position_embedding="rotary")
    map_encoder = None

    def __call__(self, tokens, goal=None, context=None, map_embedding=None):
        impossible = 1e-13
        batch, length = tokens.shape
        probabilities = torch.full((batch, length, 5), impossible, dtype=torch.float64)
        for i in range(length):
            predicted = (i + 1) % 4  # the dimension of the token that position i predicts
            for row in range(batch):
                if predicted == 1:
                    probabilities[row, i, :2] = torch.tensor([0.6, 0.4]) if tokens[row, i] == 0 else torch.tensor([1.0, impossible])
                elif predicted in (2, 3):
                    probabilities[row, i, 0] = 1.0
                else:
                    probabilities[row, i, :4] = 0.25 if tokens[row, i - 2] == 0 else torch.tensor([impossible, impossible, 1.0, impossible])
        return probabilities.log().float()


def test_likelihood_mode_picks_the_most_probable_sequence_of_a_handcrafted_model():
    model, prefix = Handcrafted(), torch.tensor([[0]])
    discretizer = Discretizer.fit(np.tile(np.arange(4.0), (4, 1)).T, "uniform", DiscretizeSpec(n_bins=4), 1, 1)
    spec = PlannerSpec(mode="likelihood", horizon=2, beam_width=4, n_expand=2, context=3, action_cdf=None, cached=False)
    result = plan(model, discretizer, spec, prefix, torch.Generator().manual_seed(0))
    assert result.actions[0, :, 0].tolist() == [1, 0]
    assert result.scores[0].item() == pytest.approx(np.log(0.4), abs=1e-4)
    # a one-step search sees only the first action: the likelier one
    one_step = plan(model, discretizer, replace(spec, horizon=1), prefix, torch.Generator().manual_seed(0))
    assert one_step.actions[0, 0, 0].item() == 0 and one_step.scores[0].item() == pytest.approx(np.log(0.6), abs=1e-4)
