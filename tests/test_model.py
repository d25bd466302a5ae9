"""The hybrid two-tower module: shapes, the "no ID" padding row, DropoutNet's keep mask, checkpoints."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_tasks.model.hybrid import HybridModel, ModelSpec, load_model, save_model

SPEC = ModelSpec(
    content_dim=6,
    text_dim=4,
    kg_dim=2,
    n_id_items=4,
    n_genders=2,
    n_ages=7,
    n_occupations=3,
    dim=4,
    hidden=8,
    demo_dim=2,
)
N_ITEMS = 6  # 4 with an ID row, 2 new items
ID_ROWS = torch.tensor([0, 1, 2, 3, 4, 4])  # 4 = SPEC.n_id_items: "no ID"


@pytest.fixture
def model() -> HybridModel:
    torch.manual_seed(0)
    return HybridModel(SPEC).eval()


@pytest.fixture
def content() -> torch.Tensor:
    return torch.randn(N_ITEMS, SPEC.content_dim, generator=torch.Generator().manual_seed(1))


def _user_inputs(batch: int = 3, length: int = 5) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(2)
    demo = torch.tensor([[1, 3, 2], [0, 0, 0], [2, 7, 3]])[:batch]  # row 0 = unknown
    kg = torch.randn(batch, SPEC.kg_dim, generator=g)
    profile = torch.randn(batch, SPEC.text_dim, generator=g)
    taste = torch.randn(batch, SPEC.text_dim, generator=g)
    has_taste = torch.tensor([1.0, 0.0, 1.0])[:batch]
    history = torch.randint(0, N_ITEMS, (batch, length), generator=g)
    mask = torch.zeros(batch, length)
    mask[0, :5], mask[2, :2] = 1.0, 1.0  # user 1 has no history at all
    return demo, kg, profile, taste, has_taste, history, mask


def test_item_and_user_towers_have_the_spec_shapes(model: HybridModel, content: torch.Tensor) -> None:
    vecs, bias = model.items(content, ID_ROWS)
    assert vecs.shape == (N_ITEMS, SPEC.dim) and bias.shape == (N_ITEMS,)
    users = model.users(*_user_inputs(), vecs)
    assert users.shape == (3, SPEC.dim)
    assert torch.isfinite(users).all()  # the user without history: no division by zero
    assert model.item_id.num_embeddings == SPEC.n_id_items + 1


def test_an_item_without_id_gets_the_content_part_only(model: HybridModel, content: torch.Tensor) -> None:
    """Guards the padding row: a new item's ID embedding and bias are exactly zero."""
    assert torch.count_nonzero(model.item_id.weight[SPEC.n_id_items]) == 0
    assert torch.count_nonzero(model.item_id_bias.weight[SPEC.n_id_items]) == 0
    vecs, bias = model.items(content, ID_ROWS)
    with torch.no_grad():
        content_vec, content_bias = model.item_content(content), model.item_content_bias(content).squeeze(-1)
    torch.testing.assert_close(vecs[4:], content_vec[4:])
    torch.testing.assert_close(bias[4:], content_bias[4:])
    assert not torch.allclose(vecs[:4], content_vec[:4])  # items with an ID row do get their ID part


def test_the_no_id_row_stays_zero_after_training_steps(model: HybridModel, content: torch.Tensor) -> None:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        vecs, bias = model.items(content, ID_ROWS)
        loss = (vecs.pow(2).sum() + bias.sum()) + model.users(*_user_inputs(), vecs).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.count_nonzero(model.item_id.weight[SPEC.n_id_items]) == 0
    assert torch.count_nonzero(model.item_id_bias.weight[SPEC.n_id_items]) == 0


def test_keep_mask_zero_equals_no_id_and_one_equals_no_mask(model: HybridModel, content: torch.Tensor) -> None:
    no_id = model.items(content, torch.full((N_ITEMS,), SPEC.n_id_items))
    hidden = model.items(content, ID_ROWS, keep=torch.zeros(N_ITEMS))
    kept = model.items(content, ID_ROWS, keep=torch.ones(N_ITEMS))
    plain = model.items(content, ID_ROWS)
    for a, b in ((hidden, no_id), (kept, plain)):
        torch.testing.assert_close(a[0], b[0])
        torch.testing.assert_close(a[1], b[1])
    partial = model.items(content, ID_ROWS, keep=torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(partial[0][[0, 2]], plain[0][[0, 2]])
    torch.testing.assert_close(partial[0][[1, 3]], no_id[0][[1, 3]])


def test_masked_history_positions_do_not_count(model: HybridModel, content: torch.Tensor) -> None:
    vecs, _ = model.items(content, ID_ROWS)
    inputs = list(_user_inputs())
    before = model.users(*inputs, vecs)
    history = inputs[5].clone()
    history[2, 2:] = (history[2, 2:] + 1) % N_ITEMS  # change only padded positions of user 2
    history[1] = (history[1] + 1) % N_ITEMS  # and every position of user 1, who has none
    inputs[5] = history
    torch.testing.assert_close(model.users(*inputs, vecs), before)


def test_taste_text_counts_only_where_has_taste(model: HybridModel, content: torch.Tensor) -> None:
    vecs, _ = model.items(content, ID_ROWS)
    inputs = list(_user_inputs())
    before = model.users(*inputs, vecs)
    inputs[3] = inputs[3].clone()
    inputs[3][1] += 5.0  # user 1 has has_taste = 0
    after = model.users(*inputs, vecs)
    torch.testing.assert_close(after[1], before[1])
    inputs[3][0] += 5.0  # user 0 has has_taste = 1
    assert not torch.allclose(model.users(*inputs, vecs)[0], before[0])


def _liked(batch: int = 3, length: int = 5) -> torch.Tensor:
    liked = torch.ones(batch, length)
    liked[0, 1:3] = 0.0  # user 0 disliked two of its five items
    return liked


def test_a_disliked_history_item_weighs_the_learned_weight(model: HybridModel, content: torch.Tensor) -> None:
    vecs, _ = model.items(content, ID_ROWS)
    inputs = list(_user_inputs())
    other = list(inputs)
    other[5] = inputs[5].clone()
    other[5][0, 1:3] = (other[5][0, 1:3] + 1) % N_ITEMS  # other items where user 0 disliked
    with torch.no_grad():
        torch.testing.assert_close(
            model.users(*inputs, vecs, history_liked=_liked()), model.users(*inputs, vecs)
        )  # w = 1
        assert not torch.allclose(
            model.users(*other, vecs, history_liked=_liked())[0], model.users(*inputs, vecs, history_liked=_liked())[0]
        )
        model.disliked_log_weight.fill_(-40.0)  # w ~ 0: user 0's pool is its liked items alone
        torch.testing.assert_close(
            model.users(*other, vecs, history_liked=_liked()), model.users(*inputs, vecs, history_liked=_liked())
        )
        changed = model.users(*inputs, vecs, history_liked=_liked())
    assert not torch.allclose(changed[0], model.users(*inputs, vecs)[0])  # and not the plain mean
    torch.testing.assert_close(changed[1:], model.users(*inputs, vecs)[1:])  # users 1, 2 liked all they have


def test_a_checkpoint_without_the_disliked_weight_pools_the_plain_mean(
    model: HybridModel, content: torch.Tensor, tmp_path: Path
) -> None:
    """Bundles saved before the weight: every history item weighs 1, as they were trained."""
    state = {k: v for k, v in model.state_dict().items() if k != "disliked_log_weight"}
    torch.save({"spec": model.spec.to_dict(), "state_dict": state}, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.disliked_log_weight.item() == 0.0
    vecs, _ = model.items(content, ID_ROWS)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.users(*_user_inputs(), vecs, history_liked=_liked()), model.users(*_user_inputs(), vecs)
        )


def test_save_and_load_give_identical_outputs(model: HybridModel, content: torch.Tensor, tmp_path: Path) -> None:
    with torch.no_grad():  # move the weights away from their initial values first
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.spec == SPEC and not loaded.training
    for a, b in zip(model.items(content, ID_ROWS), loaded.items(content, ID_ROWS)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    vecs, _ = model.items(content, ID_ROWS)
    torch.testing.assert_close(loaded.users(*_user_inputs(), vecs), model.users(*_user_inputs(), vecs), rtol=0, atol=0)


class _NotAWeight:
    """A pickled class instance: a stand-in for code smuggled into a checkpoint; weights_only refuses it."""


def test_load_model_refuses_a_checkpoint_that_unpickles_code(model: HybridModel, tmp_path: Path) -> None:
    """Guards ``weights_only=True``: loading must not run arbitrary pickled callables."""
    path = tmp_path / "model.pt"
    torch.save({"spec": SPEC.to_dict(), "state_dict": model.state_dict(), "extra": _NotAWeight()}, path)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        load_model(path)


def test_load_model_rejects_a_checkpoint_of_other_shapes(model: HybridModel, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"spec": {**SPEC.to_dict(), "dim": 8}, "state_dict": model.state_dict()}, path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model(path)


@pytest.mark.parametrize("off", ["text", "kg", "demographics"])
def test_an_ablated_input_changes_nothing(content: torch.Tensor, off: str) -> None:
    """inputs=(...) without one kind: perturbing that kind's features leaves every output unchanged."""
    torch.manual_seed(0)
    model = HybridModel(
        ModelSpec(**{**SPEC.to_dict(), "inputs": tuple(i for i in ("text", "kg", "demographics") if i != off)})
    ).eval()
    demo, kg, profile, taste, has_taste, history, mask = _user_inputs()
    noisy_content, noisy = content.clone(), {}
    if off == "text":
        noisy_content[:, : SPEC.text_dim] += 5.0
        noisy = {"profile": profile + 5.0, "taste": taste + 5.0}
    elif off == "kg":
        noisy_content[:, SPEC.text_dim :] += 5.0
        noisy = {"kg": kg + 5.0}
    else:
        noisy = {"demo": torch.zeros_like(demo), "kg": kg + 5.0, "profile": profile + 5.0}
    with torch.no_grad():
        vecs, bias = model.items(content, ID_ROWS)
        vecs2, bias2 = model.items(noisy_content, ID_ROWS)
        users = model.users(demo, kg, profile, taste, has_taste, history, mask, vecs)
        args = {"demo": demo, "kg": kg, "profile": profile, "taste": taste} | noisy
        users2 = model.users(args["demo"], args["kg"], args["profile"], args["taste"], has_taste, history, mask, vecs)
    torch.testing.assert_close(vecs2, vecs)
    torch.testing.assert_close(bias2, bias)
    torch.testing.assert_close(users2, users)


def test_a_checkpoint_without_inputs_loads_with_every_input(model: HybridModel, tmp_path: Path) -> None:
    """Bundles saved before the ablation switch have no "inputs" in their spec."""
    spec = model.spec.to_dict()
    del spec["inputs"]
    torch.save({"spec": spec, "state_dict": model.state_dict()}, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").spec.inputs == ("text", "kg", "demographics")


@pytest.mark.parametrize("inputs", [("text", "kg", "demographics"), ("kg", "demographics"), ("text",)])
def test_the_numpy_user_tower_computes_what_the_module_does(inputs: tuple[str, ...], content: torch.Tensor) -> None:
    from dataclasses import replace

    from recsys_tasks.model.hybrid import UserTower

    torch.manual_seed(3)
    model = HybridModel(replace(SPEC, inputs=inputs)).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the initialisation: every weight matters
            p.add_(torch.randn_like(p) * 0.3)
        item_vecs, _ = model.items(content, ID_ROWS)
        expected = model.users(*_user_inputs(), item_vecs, history_liked=_liked()).numpy()
    got = UserTower(model)(*[a.numpy() for a in _user_inputs()], item_vecs.numpy(), _liked().numpy())
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------ sampled softmax (docs/decisions/0013-sampled-softmax.md)
def _scores(b: int = 8, n: int = 40, d: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, d, generator=g),
        torch.randn(n, d, generator=g),
        torch.randn(n, generator=g),
        torch.arange(b) * 3,
    )


def test_the_sampled_softmax_over_the_whole_catalogue_with_uniform_q_is_the_full_softmax() -> None:
    """Every item drawn once with q = 1/n: log(n q) = 0, the target's own draw masked, so the loss and its
    gradients are the full softmax's."""
    from recsys_tasks.model.sampled_softmax import sampled_softmax_loss

    users, vecs, bias, targets = _scores()
    n = len(vecs)
    full_users, sampled_users = users.clone().requires_grad_(), users.clone().requires_grad_()
    full_vecs, sampled_vecs = vecs.clone().requires_grad_(), vecs.clone().requires_grad_()
    full = torch.nn.functional.cross_entropy(full_users @ full_vecs.T + bias, targets)
    drawn = torch.arange(n)
    log_expected = torch.log(torch.full((n,), n * (1.0 / n)))
    hits = targets[:, None] == drawn[None, :]
    sampled = sampled_softmax_loss(
        sampled_users, sampled_vecs[targets], bias[targets], sampled_vecs[drawn], bias[drawn], log_expected, hits
    )
    full.backward()
    sampled.backward()
    assert sampled.item() == pytest.approx(full.item(), rel=1e-6)
    torch.testing.assert_close(sampled_users.grad, full_users.grad)
    torch.testing.assert_close(sampled_vecs.grad, full_vecs.grad)


@pytest.mark.parametrize("sign", [1.0, -1.0, 0.0])
def test_the_log_q_corrected_sampled_loss_averages_to_the_full_loss(sign: float) -> None:
    """A partial popularity-skewed sample (60 draws of 40 items, q ∝ count + 1): over 2,000 seeded draws the
    corrected loss averages within 4% of the full softmax loss (what is left is Jensen's gap of log of an
    unbiased sum); the correction's sign flipped, or no correction, misses by 7% and more."""
    from recsys_tasks.model.sampled_softmax import NegativeSampler, sampled_softmax_loss

    users, vecs, bias, targets = _scores()
    full = torch.nn.functional.cross_entropy(users @ vecs.T + bias, targets).item()
    sampler = NegativeSampler(np.arange(len(vecs)), np.arange(len(vecs))[::-1], alpha=1.0, seed=0)
    losses = []
    for _ in range(2000):
        rows, log_expected = sampler.draw(60)
        drawn = torch.as_tensor(rows)
        hits = torch.as_tensor(targets.numpy()[:, None] == rows[None, :])
        loss = sampled_softmax_loss(
            users, vecs[targets], bias[targets], vecs[drawn], bias[drawn], sign * torch.as_tensor(log_expected), hits
        )
        losses.append(loss.item())
    close = abs(float(np.mean(losses)) - full) / full < 0.04
    assert close == (sign == 1.0)


def test_the_sampler_draws_by_popularity_to_the_alpha_and_reports_log_n_q() -> None:
    from recsys_tasks.model.sampled_softmax import NegativeSampler

    rows, counts = np.array([10, 11, 12]), np.array([0, 1, 3])  # weights (count + 1)^0.5: 1, √2, 2
    sampler = NegativeSampler(rows, counts, alpha=0.5, seed=1)
    q = np.sqrt(counts + 1.0) / np.sqrt(counts + 1.0).sum()
    drawn, log_expected = sampler.draw(30_000)
    assert set(drawn.tolist()) == {10, 11, 12}
    frequency = np.array([(drawn == r).mean() for r in rows])
    np.testing.assert_allclose(frequency, q, atol=0.01)
    np.testing.assert_allclose(log_expected[drawn == 12], np.log(30_000 * q[2]), rtol=1e-6)
    uniform = NegativeSampler(rows, counts, alpha=0.0, seed=1)
    np.testing.assert_allclose(uniform.q, 1 / 3)
    with pytest.raises(ValueError, match="no trainable items"):
        NegativeSampler(np.zeros(0, np.int64), np.zeros(0), 1.0, 0)


def test_item_parts_add_up_to_items(model: HybridModel, content: torch.Tensor) -> None:
    vec, bias, id_vec, id_bias = model.item_parts(content, ID_ROWS)
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    items_vec, items_bias = model.items(content, ID_ROWS, keep)
    torch.testing.assert_close(items_vec, vec + id_vec * keep[:, None])
    torch.testing.assert_close(items_bias, bias + id_bias * keep)
