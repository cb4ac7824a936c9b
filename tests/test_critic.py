import numpy as np
import pytest
import torch

from trajectory_transformer.critic import AgentIdentity, BCSpec, IQLSpec, OfflineAgent, expectile_loss, load_offline_agent, train_agent
from trajectory_transformer.datasets import Transitions
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.evaluation import PolicyAgent


def test_expectile_loss_matches_a_hand_computation():
    # differences -2, 1, 3 at expectile 0.9: weights 0.1, 0.9, 0.9 -> (0.4 + 0.9 + 8.1) / 3
    assert expectile_loss(torch.tensor([-2.0, 1.0, 3.0]), 0.9).item() == pytest.approx(9.4 / 3)
    # expectile 0.5 is half the mean squared error
    assert expectile_loss(torch.tensor([-2.0, 1.0, 3.0]), 0.5).item() == pytest.approx(0.5 * 14 / 3)


def chain_walks(episodes: int = 400, seed: int = 0) -> Transitions:
    """States 0..4 on a line; actions -1 (left) or +1 (right) uniformly at random; reward 1 on
    the step that enters state 4, which ends the episode (terminal); at most 12 steps."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(episodes):
        state = int(rng.integers(0, 4))
        for step in range(12):
            action = int(rng.choice([-1, 1]))
            following = min(max(state + action, 0), 4)
            terminal = following == 4
            rows.append((state, action, float(terminal), terminal, step == 11 and not terminal))
            state = following
            if terminal:
                break
    columns = list(zip(*rows))
    return Transitions(np.array(columns[0], np.float32)[:, None], np.array(columns[1], np.float32)[:, None],
                       np.array(columns[2], np.float32), np.array(columns[3], bool), np.array(columns[4], bool))


@pytest.fixture(scope="module")
def chain_agent(tmp_path_factory):
    folder = tmp_path_factory.mktemp("iql")
    spec = IQLSpec(hidden=[64, 64], updates=2500, batch_size=256, learning_rate=1e-3, discount=0.9, expectile=0.7,
                   temperature=3.0, reward_shift=0.0, log_every=500, checkpoint_every=1000, device="cpu")
    train_agent(chain_walks(), spec, AgentIdentity("chain", "x", "iql", 0), folder / "agent", folder / "report",
                folder / "c.pt", progress=False)
    return load_offline_agent(folder / "agent")[0]


def test_iql_on_a_chain_orders_the_values_correctly(chain_agent):
    """The optimal values of the chain: V*(s) = 0.9^(3 - s), Q*(s, +1) = V*(s + 1) discounted
    > Q*(s, -1). IQL with expectile 0.7 need not reach them, but must order them."""
    states = torch.arange(4, dtype=torch.float32)[:, None]
    right = chain_agent.q(states, torch.ones(4, 1))
    left = chain_agent.q(states, -torch.ones(4, 1))
    assert (right > left).all()
    values = chain_agent.v(states)
    assert (values[1:] > values[:-1]).all()
    assert right[3].item() == pytest.approx(1.0, abs=0.15)  # entering the goal: reward 1, terminal
    # the advantage-weighted actor prefers moving right
    assert (chain_agent.act(states)[:, 0] > 0).all()


def test_the_same_normalization_at_training_and_acting_time(tmp_path):
    """Observations far from zero (1000 + x), actions 0.8 x: a policy that did not standardize
    its inputs the same way when acting could not recover the expert."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(4000, 1)).astype(np.float32)
    data = Transitions(1000 + x, 0.8 * x, np.zeros(4000, np.float32), np.zeros(4000, bool), np.zeros(4000, bool))
    data.timeouts[::20] = True
    spec = BCSpec(hidden=[64, 64], updates=1500, learning_rate=1e-3, log_every=500, checkpoint_every=1000, device="cpu")
    train_agent(data, spec, AgentIdentity("line", "x", "bc", 0), tmp_path / "agent", tmp_path / "report", tmp_path / "c.pt", progress=False)
    agent = load_offline_agent(tmp_path / "agent")[0]
    assert agent.observation_mean.item() == pytest.approx(1000 + x.mean(), abs=1e-3)
    assert agent.observation_std.item() == pytest.approx(x.std(ddof=1), rel=1e-3)
    probe = np.array([[999.5], [1000.0], [1000.5]])
    acting = PolicyAgent(agent, torch.device("cpu"))
    actions = np.array(acting.act([0, 1, 2], list(probe)))[:, 0]
    assert np.allclose(actions, [-0.4, 0.0, 0.4], atol=0.08)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    data = chain_walks(episodes=50)
    spec = IQLSpec(hidden=[16], updates=40, batch_size=32, log_every=15, checkpoint_every=20, device="cpu")
    identity = AgentIdentity("chain", "x", "iql", 0)
    train_agent(data, spec, identity, tmp_path / "whole", tmp_path / "r1", tmp_path / "whole.pt", progress=False)
    # stopped after the update-20 checkpoint; a fresh call resumes from it
    checkpoint = tmp_path / "half.pt"
    original = torch.optim.Adam.step
    calls = {"n": 0}

    def failing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3 * 25:  # three optimizers per update: stop during update 26
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    torch.optim.Adam.step = failing_step
    try:
        with pytest.raises(KeyboardInterrupt):
            train_agent(data, spec, identity, tmp_path / "resumed", tmp_path / "r2", checkpoint, progress=False)
    finally:
        torch.optim.Adam.step = original
    assert checkpoint.exists() and not (tmp_path / "resumed").exists()
    train_agent(data, spec, identity, tmp_path / "resumed", tmp_path / "r2", checkpoint, progress=False)
    assert (tmp_path / "whole/agent.safetensors").read_bytes() == (tmp_path / "resumed/agent.safetensors").read_bytes()
    # the curves too, though the logging period does not divide the checkpoint period
    curve = "live/plots/metrics/actor_loss.tsv"
    assert (tmp_path / "r1" / curve).read_text() == (tmp_path / "r2" / curve).read_text()
    assert not checkpoint.exists()


def test_a_missing_or_corrupt_agent_is_one_clear_line(tmp_path):
    with pytest.raises(PipelineError, match="no weights at .*dvc repro"):
        load_offline_agent(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/agent.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PipelineError, match="corrupt"):
        load_offline_agent(tmp_path / "bad")


def test_goal_conditioned_bc_heads_for_the_goal_it_is_given(tmp_path):
    """Paths on a line, each heading for the point it ends in: action +0.5 towards a goal above,
    -0.5 towards one below. A policy that did not read each path's final state as its goal
    could only learn the average action, about 0, wherever it stands."""
    rng = np.random.default_rng(0)
    observations, following, actions, ends = [], [], [], []
    for _ in range(300):
        start, goal = rng.uniform(-2, 2, size=2)
        x = np.linspace(start, goal, 7)
        observations.append(x[:-1])
        following.append(x[1:])
        actions.append(np.full(6, 0.5 if goal > start else -0.5))
        ends.append(np.arange(6) == 5)
    ends = np.concatenate(ends)
    column = lambda parts: np.concatenate(parts).astype(np.float32)[:, None]  # noqa: E731
    data = Transitions(column(observations), column(actions), np.zeros(len(ends), np.float32), ends, np.zeros(len(ends), bool),
                       next_observations=column(following))
    spec = BCSpec(hidden=[64, 64], updates=800, learning_rate=1e-3, log_every=400, checkpoint_every=1000, device="cpu")
    identity = AgentIdentity("line", "x", "bc", 0, goal_dims=[0], max_path_length=1000)
    train_agent(data, spec, identity, tmp_path / "agent", tmp_path / "report", tmp_path / "c.pt", progress=False)
    acting = PolicyAgent(load_offline_agent(tmp_path / "agent")[0], torch.device("cpu"))
    acting.reset([np.array([1.5]), np.array([-1.5])], [None, None])
    toward_high, toward_low = np.array(acting.act([0, 1], [np.array([0.0]), np.array([0.0])]))[:, 0]
    assert toward_high > 0.3 and toward_low < -0.3
    with pytest.raises(PipelineError, match="pass each episode's desired goal"):
        acting.reset([None, None], [None, None])


def test_map_conditioned_bc_picks_the_discrete_action_its_map_shows(tmp_path):
    """The discrete action (0..3) is the cell of a 2 x 2 map that holds code 2: only a
    categorical policy reading the map gets it; a Gaussian on the index would average it."""
    rng = np.random.default_rng(0)
    marked = rng.integers(0, 4, size=2000)
    maps = np.ones((2000, 2, 2), np.uint8)
    maps.reshape(2000, 4)[np.arange(2000), marked] = 2
    data = Transitions(np.zeros((2000, 1), np.float32), marked.astype(np.float32)[:, None], np.zeros(2000, np.float32),
                       np.zeros(2000, bool), np.arange(2000) % 10 == 9, maps=maps)
    spec = BCSpec(hidden=[32], updates=400, learning_rate=3e-3, log_every=200, checkpoint_every=1000, device="cpu")
    identity = AgentIdentity("cells", "x", "bc", 0, map_conditioned=True)
    train_agent(data, spec, identity, tmp_path / "agent", tmp_path / "report", tmp_path / "c.pt", action_choices=4, progress=False)
    acting = PolicyAgent(load_offline_agent(tmp_path / "agent")[0], torch.device("cpu"))
    probes = np.ones((4, 2, 2), np.uint8)
    probes.reshape(4, 4)[np.arange(4), np.arange(4)] = 2
    acting.reset([None] * 4, list(probes))
    assert np.array(acting.act([0, 1, 2, 3], [np.zeros(1)] * 4))[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_categorical_policy_draws_its_actions_only_when_asked(tmp_path):
    """Greedy, an untrained categorical policy takes one action wherever it stands; drawing, it
    takes each action about as often as its probability says, the same draws for the same seed.
    `load_agent` draws by default, as the pipeline does, and takes the most likely when asked."""
    torch.manual_seed(0)
    agent = OfflineAgent(1, 1, [8], with_critic=False, action_choices=3)
    observations = torch.zeros(3000, 1)
    greedy = agent.act(observations)
    assert greedy.unique().numel() == 1
    probabilities = agent.policy_output(observations[:1]).softmax(-1)[0]
    drawn = agent.act(observations, generator=torch.Generator().manual_seed(5))
    counts = torch.bincount(drawn[:, 0].long(), minlength=3) / 3000
    assert torch.allclose(counts, probabilities, atol=0.03)
    assert torch.equal(drawn, agent.act(observations, generator=torch.Generator().manual_seed(5)))

    from trajectory_transformer import load_agent
    from trajectory_transformer.critic import write_agent
    write_agent(agent, AgentIdentity("d", "x", "bc", 0), BCSpec(hidden=[8]), tmp_path / "agent", tmp_path / "report", {}, [])

    def acted(mode: str) -> set[float]:
        acting = load_agent(tmp_path / "agent", seed=5, discrete_actions=mode)
        return {float(acting.act(np.zeros(1), None if step == 0 else 0.0)[0]) for step in range(50)}

    assert acted("greedy") == {float(greedy[0, 0])}
    assert len(acted("sample")) == 3
