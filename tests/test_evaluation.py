import numpy as np
import pytest
import torch

from trajectory_transformer import evaluation
from trajectory_transformer.datasets import DatasetSpec, FetchSpec, ObservationSpec, fetch, load_transitions
from trajectory_transformer.discretization import DiscretizeSpec, Discretizer
from trajectory_transformer.evaluation import EvaluateSpec, PlanningAgent, evaluate, summarize
from trajectory_transformer.model import ModelConfig, TrajectoryTransformer
from trajectory_transformer.planner import PlannerSpec
from trajectory_transformer.trajectories import SequenceSpec, joined_paths


@pytest.fixture(scope="module")
def reacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "reacher"
    spec = DatasetSpec(fetch=FetchSpec(source="generate", generator="reacher", quality="medium", episodes=10, reference_episodes=2))
    fetch(spec.fetch, "reacher", folder)
    joined = np.concatenate(joined_paths(load_transitions(folder, spec.observation), SequenceSpec()))
    torch.manual_seed(0)
    model = TrajectoryTransformer(ModelConfig(observation_dim=10, action_dim=2, n_bins=20, n_layer=1, n_head=2,
                                              n_embd=16, position_embedding="rotary")).eval()
    return spec, folder, joined, model


PLANNER = PlannerSpec(horizon=2, beam_width=4, n_expand=2, context=2)


@pytest.mark.parametrize("reconstruction", ["bin-mean", "midpoint"])
def test_the_executed_action_is_the_first_planned_action_decoded(reacher, monkeypatch, reconstruction):
    spec, folder, joined, model = reacher
    discretizer = Discretizer.fit(joined, "quantile", DiscretizeSpec(n_bins=20, reconstruction=reconstruction), 10, 2)
    plans, executed = [], []
    real_plan, real_make_env = evaluation.plan, evaluation.make_env

    def recording_plan(*args, **kwargs):
        plans.append(real_plan(*args, **kwargs))
        return plans[-1]

    class Recorder:
        def __init__(self, env):
            self.env, self.spec, self.action_space = env, env.spec, env.action_space

        def reset(self, **kwargs):
            return self.env.reset(**kwargs)

        def step(self, action):
            executed.append(np.array(action))
            return self.env.step(action)

    monkeypatch.setattr(evaluation, "plan", recording_plan)
    monkeypatch.setattr(evaluation, "make_env", lambda *a: Recorder(real_make_env(*a)))
    agent = PlanningAgent(model, discretizer, PLANNER, 0, torch.device("cpu"))
    evaluate(agent, spec, folder, EvaluateSpec(episodes=2, max_episode_steps=3), progress=False)
    first = plans[0].actions[:, 0].numpy()  # (episodes, action dims) tokens
    expected = discretizer.table[np.arange(10, 12), first]
    assert np.allclose(executed[0], np.clip(expected[0], -1, 1), atol=1e-6)
    assert np.allclose(executed[1], np.clip(expected[1], -1, 1), atol=1e-6)
    assert len(plans) == 3  # replanned every step


def test_evaluation_is_deterministic_and_summarized(reacher):
    spec, folder, joined, model = reacher
    discretizer = Discretizer.fit(joined, "quantile", DiscretizeSpec(n_bins=20), 10, 2)
    run = lambda: evaluate(PlanningAgent(model, discretizer, PLANNER, 0, torch.device("cpu")), spec, folder,  # noqa: E731
                           EvaluateSpec(episodes=3, max_episode_steps=5), progress=False)[0]
    first, second = run(), run()
    assert first == second
    assert [r["length"] for r in first] == [5, 5, 5]
    summary = summarize(first)
    scores = [r["normalized_score"] for r in first]
    assert summary["normalized_score"] == pytest.approx(np.mean(scores))
    assert summary["normalized_score_stderr"] == pytest.approx(np.std(scores, ddof=1) / np.sqrt(3))


def test_the_maze_evaluation_task_counts_success_apart_from_the_return(tmp_path):
    """The fixed-goal task: reward 1 per step at the goal, `success` when the goal is reached."""
    from trajectory_transformer import mazes

    env = evaluation.make_env(DatasetSpec(fetch=FetchSpec(source="generate", generator="pointmaze", maze="umaze", transitions=10),
                                          observation=ObservationSpec(observation_keys=["observation"])), tmp_path)
    obs, _ = env.reset(seed=0)
    expert = mazes.WaypointExpert(env.unwrapped, mazes.LAYOUTS["umaze"], np.random.default_rng(0))
    total, successes, steps, done = 0.0, 0, 0, False
    while not done:
        state = obs["observation"]
        obs, reward, terminated, truncated, info = env.step(np.clip(expert.action(state[:2], state[2:], env.evaluation_goal), -1, 1))
        total, successes, steps, done = total + reward, successes + info["success"], steps + 1, terminated or truncated
    assert steps == 300 and successes > 0  # the episode runs its full length
    assert total == successes  # the return counts steps at the goal; success is reaching it
    assert np.linalg.norm(obs["achieved_goal"] - env.evaluation_goal) <= mazes.GOAL_RADIUS


def test_the_one_environment_agent_plays_the_evaluated_episode(reacher):
    """`load_agent`'s agent is the evaluate stages' agent run on one environment: same episode."""
    spec, folder, joined, model = reacher
    discretizer = Discretizer.fit(joined, "quantile", DiscretizeSpec(n_bins=20), 10, 2)
    record = evaluate(PlanningAgent(model, discretizer, PLANNER, 3, torch.device("cpu")), spec, folder,
                      EvaluateSpec(episodes=1, max_episode_steps=6), progress=False)[0][0]
    env = evaluation.make_env(spec, folder)
    agent = evaluation.Agent(PlanningAgent(model, discretizer, PLANNER, 3, torch.device("cpu")), action_space=env.action_space)
    observation, _ = env.reset(seed=record["seed"])
    agent.reset()
    reward, total = None, 0.0
    for _ in range(6):
        action = agent.act(observation, reward)
        observation, reward, *_ = env.step(action)
        total += reward
    assert total == record["return"]
    with pytest.raises(evaluation.PipelineError, match="pass the reward"):
        agent.act(observation)
