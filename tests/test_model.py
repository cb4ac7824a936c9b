import torch

from trajectory_transformer import model as model_module
from trajectory_transformer.model import ModelConfig, TrajectoryTransformer, target_groups, token_losses, weighted_loss


def tiny(**overrides):
    """The published model (learned positions) unless told otherwise."""
    torch.manual_seed(0)
    config = ModelConfig(observation_dim=2, action_dim=1, n_bins=5, window=3, n_layer=2, n_head=2, n_embd=16,
                         **{"position_embedding": "learned", **overrides})
    return TrajectoryTransformer(config).eval()


def test_value_tokens_change_no_logit():
    model = tiny()
    dims = model.config.transition_dim  # 5: obs, obs, action, reward, value
    tokens = torch.randint(0, 5, (3, model.config.block_size))
    changed = tokens.clone()
    changed[:, dims - 1 :: dims] = torch.randint(0, 6, changed[:, dims - 1 :: dims].shape)
    assert not torch.equal(tokens, changed)
    assert torch.allclose(model(tokens), model(changed), atol=0, rtol=0)
    # any other token does change later logits
    other = tokens.clone()
    other[:, 0] = (other[:, 0] + 1) % 5
    assert not torch.allclose(model(tokens)[:, 1:], model(other)[:, 1:])


def test_value_tokens_change_no_logit_with_rotary_positions_and_a_goal():
    model = tiny(position_embedding="rotary", goal_dims=[1])
    tokens = torch.randint(0, 5, (2, 12))
    goal = torch.randint(0, 5, (2, 1))
    changed = tokens.clone()
    changed[:, 4::5] = 0
    assert torch.equal(model(tokens, goal), model(changed, goal))
    assert not torch.allclose(model(tokens, goal), model(tokens, (goal + 1) % 5))


def test_token_offsets_give_each_dimension_its_own_rows():
    model = tiny()  # transition_dim 5, V = 5: rows 0..24 per dimension, 25 termination, 26 value slot
    tokens = torch.tensor([0, 1, 4, 5, 3, 2, 5, 0])
    assert model.token_ids(tokens).tolist() == [0, 6, 14, 25, 26, 2, 25, 10]
    # continuing mid-sequence: the planner embeds token 7 on its own
    assert model.token_ids(tokens[7:], first_position=7).tolist() == [10]


def test_each_position_uses_its_own_head():
    model = tiny()
    with torch.no_grad():
        for dim in range(5):
            model.heads[dim].fill_(float(dim))
    hidden = torch.ones(1, 7, 16)
    logits = model.logits_at(hidden)
    # every logit of position t is 16 * (t mod 5): the head of that position's dimension
    assert logits[0, :, 0].tolist() == [16.0 * (t % 5) for t in range(7)]
    assert model.logits_at(hidden[:, :2], first_position=3)[0, :, 0].tolist() == [48.0, 64.0]


def test_targets_are_grouped_by_the_dimension_they_predict():
    config = ModelConfig(observation_dim=2, action_dim=1, n_bins=5, window=2)
    # inputs 0..8 predict tokens 1..9 of dims 1,2,3,4,0,1,2,3,4
    assert target_groups(config, 9).tolist() == [0, 1, 2, 3, 0, 0, 1, 2, 3]


def test_masked_positions_do_not_enter_the_loss():
    logits = torch.randn(1, 4, 6)
    targets = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    weights, groups = torch.ones(4), torch.zeros(4, dtype=torch.long)
    changed = logits.clone()
    changed[0, 2:] = torch.randn(2, 6) * 10
    base = weighted_loss(token_losses(logits, targets), mask, weights, groups)
    assert base == weighted_loss(token_losses(changed, targets), mask, weights, groups)
    assert base == (token_losses(logits, targets)[0, :2].sum() / 4)


def test_hopper_sized_model_has_the_published_size():
    config = ModelConfig(observation_dim=11, action_dim=3, n_bins=100, position_embedding="learned")
    model = TrajectoryTransformer(config)
    assert config.block_size == 159
    assert 1.1e6 < sum(p.numel() for p in model.parameters()) < 1.3e6  # about 1.2 M (published system §3)


def test_the_map_context_changes_the_logits_of_its_own_sequence_and_nothing_else_does():
    model = tiny(position_embedding="rotary", goal_dims=[0, 1], map_shape=[7, 7], map_codes=4)
    tokens = torch.randint(0, 5, (2, 12), generator=torch.Generator().manual_seed(1))
    goal = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(2))
    maps = torch.randint(0, 4, (2, 7, 7), generator=torch.Generator().manual_seed(3))
    base = model(tokens, goal, maps=maps)
    changed = maps.clone()
    changed[0, 3, 3] = (changed[0, 3, 3] + 1) % 4  # one cell of the first sequence's map
    moved = model(tokens, goal, maps=changed)
    assert not torch.allclose(moved[0], base[0])
    assert torch.equal(moved[1], base[1])  # the other sequence of the batch is untouched
    # the planner's path (the map encoded once, then reused) computes the same logits
    assert torch.equal(model(tokens, goal, map_embedding=model.map_encoder(maps)), base)
    # placeholder values still change nothing, with a map as without
    placeholders = tokens.clone()
    placeholders[:, 4::5] = 0
    assert torch.equal(model(placeholders, goal, maps=maps), base)


def test_cpu_dropout_drops_its_fraction_and_rescales_the_rest():
    torch.manual_seed(0)
    x = torch.rand(3, 1000, 1001) + 1.0
    y = model_module.dropout(x, 0.1, training=True)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 6554 / 65536) < 0.001  # 3M draws: 5 standard deviations
    torch.testing.assert_close(y[~dropped], x[~dropped] * 65536 / (65536 - 6554))
    assert torch.equal(model_module.dropout(x, 0.1, training=False), x)
    # the masks of consecutive rows are independent draws, not one field repeated
    assert not torch.equal(dropped[0], dropped[1])


def test_the_cpu_training_attention_is_the_fused_kernels_attention_under_the_same_mask(monkeypatch):
    torch.manual_seed(0)
    model = tiny(position_embedding="rotary", dropout=0.1)
    tokens = torch.randint(0, 7, (3, model.config.block_size))
    model.eval()
    expected = model(tokens)
    model.train()
    for module in model.modules():  # every other dropout off: only attention's path differs from eval's
        if isinstance(module, model_module.Dropout):
            module.p = 0.0
    monkeypatch.setattr(model_module, "dropout_mask", lambda shape, p, dtype: (torch.ones(shape, dtype=dtype), 1.0))
    torch.testing.assert_close(model(tokens), expected)
