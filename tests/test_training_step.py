"""finetune's training step (`training.StepLoss`): the history table and the frozen towers give the same
loss as the live towers, and only the gradients that should change do (known answers on a tiny catalogue)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_tasks.model.batches import Batch
from recsys_tasks.model.hybrid import HybridModel, ModelSpec
from recsys_tasks.model.training import StepLoss

SPEC = ModelSpec(
    content_dim=6, text_dim=4, kg_dim=2, n_id_items=30, n_genders=2, n_ages=7, n_occupations=3, dim=4, hidden=8,
    demo_dim=2,
)  # fmt: skip
N_ROWS = 34  # 30 items with an ID row, 4 new items
ID_ROWS = np.r_[np.arange(30), np.full(4, 30)]


@pytest.fixture
def content() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(N_ROWS, SPEC.content_dim)).astype(np.float32)


def _model() -> HybridModel:
    torch.manual_seed(0)
    return HybridModel(SPEC).eval()  # eval: the user tower's dropout off, so two passes are comparable


def _batch(b: int = 6, length: int = 5) -> Batch:
    rng = np.random.default_rng(2)
    mask = (np.arange(length)[None, :] < rng.integers(0, length + 1, b)[:, None]).astype(np.float32)
    mask[0] = 0.0  # one profile-only user
    history = np.where(mask > 0, rng.integers(0, 30, (b, length)), 0).astype(np.int64)
    inputs = (
        rng.integers(0, 3, (b, 3)).astype(np.int64),
        rng.normal(size=(b, SPEC.kg_dim)).astype(np.float32),
        rng.normal(size=(b, SPEC.text_dim)).astype(np.float32),
        rng.normal(size=(b, SPEC.text_dim)).astype(np.float32),
        rng.integers(0, 2, b).astype(np.float32),
        history,
        mask,
    )
    targets = rng.integers(0, 30, b).astype(np.int64)
    return Batch(
        inputs, targets, np.arange(b), np.zeros(b, np.int64), (rng.random((b, length)) < 0.7).astype(np.float32)
    )


def _loss(content: np.ndarray, negatives: int, history_refresh: int = 0, **kw) -> StepLoss:
    return StepLoss(
        content, ID_ROWS, SPEC.n_id_items, np.arange(N_ROWS), negatives=negatives, alpha=0.75, seed=3,
        device=torch.device("cpu"), history_refresh=history_refresh, **kw,
    )  # fmt: skip


def _grads(model: HybridModel) -> dict[str, torch.Tensor | None]:
    return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


def test_histories_from_a_fresh_table_give_the_live_loss_and_no_content_gradient_through_the_pooling(content) -> None:
    """Refreshed every step, the table holds the live tower's vectors: the same loss as pooling through the live
    tower (no ID dropout, the same negatives); the item-ID gradients equal too (the ID parts stay live), the
    content tower's differ (the pooled histories no longer reach it)."""
    live, table = _model(), _model()
    batch = _batch()
    live_loss = _loss(content, negatives=12, id_dropout=0.0)(live, batch)
    table_loss = _loss(content, negatives=12, id_dropout=0.0, history_refresh=1)(table, batch)
    assert table_loss.item() == pytest.approx(live_loss.item(), rel=1e-6)
    live_loss.backward()
    table_loss.backward()
    a, b = _grads(live), _grads(table)
    torch.testing.assert_close(a["item_id.weight"], b["item_id.weight"])
    torch.testing.assert_close(a["user.0.weight"], b["user.0.weight"])
    assert not torch.allclose(a["item_content.0.weight"], b["item_content.0.weight"])


def test_the_table_is_refreshed_every_n_steps_only(content) -> None:
    model, batch = _model(), _batch()
    step = _loss(content, negatives=12, history_refresh=3, id_dropout=0.5)
    step(model, batch)
    first = step._table
    with torch.no_grad():
        model.item_content[0].weight.add_(1.0)  # the tower moves; the table does not until its refresh
    step(model, batch)
    step(model, batch)
    assert step._table is first
    step(model, batch)
    assert step._table is not first
    torch.testing.assert_close(step._table, step.content_table(model)[0])


@pytest.mark.parametrize("negatives", [0, 12], ids=["full softmax", "sampled"])
def test_frozen_towers_give_the_same_loss_and_id_gradients_from_one_table(content, negatives: int) -> None:
    """The item-ID stage: with the content from `freeze`'s table and the towers not requiring gradients, the
    loss and the item-ID gradients are the live towers' (sampled: no ID dropout, whose draws follow the rows
    the tower runs over, histories included when they pool through the live tower)."""
    live, frozen = _model(), _model()
    batch, dropout = _batch(), 0.0 if negatives else 0.5
    torch.manual_seed(5)
    live_loss = _loss(content, negatives, history_refresh=0, id_dropout=dropout)(live, batch)
    frozen_step = _loss(content, negatives, history_refresh=0, id_dropout=dropout)
    towers = [p for n, p in frozen.named_parameters() if not n.startswith("item_id")]
    for p in towers:
        p.requires_grad_(False)
    frozen_step.freeze(frozen)
    torch.manual_seed(5)
    frozen_loss = frozen_step(frozen, batch)
    assert frozen_loss.item() == pytest.approx(live_loss.item(), rel=1e-6)
    live_loss.backward()
    frozen_loss.backward()
    torch.testing.assert_close(live.item_id.weight.grad, frozen.item_id.weight.grad)
    torch.testing.assert_close(live.item_id_bias.weight.grad, frozen.item_id_bias.weight.grad)
    assert all(p.grad is None for p in towers)
    frozen_step.thaw()
    assert frozen_step.frozen is None


def test_the_full_softmax_step_equals_scoring_and_pooling_through_two_passes_of_the_item_tower(content) -> None:
    """One pass of the content tower shared by the scored side and the histories: the loss and every gradient
    of `HybridModel.items` run twice (with DropoutNet's mask, then without)."""
    one, two = _model(), _model()
    batch = _batch()
    torch.manual_seed(7)
    loss = _loss(content, negatives=0, id_dropout=0.5)(one, batch)
    torch.manual_seed(7)
    keep = (torch.rand(N_ROWS) >= 0.5).float()
    c, ids = torch.as_tensor(content), torch.as_tensor(ID_ROWS)
    item_vecs, item_bias = two.items(c, ids, keep)
    history_vecs, _ = two.items(c, ids)
    inputs = [torch.as_tensor(a) for a in batch.inputs]
    users = two.users(*inputs, history_vecs, history_liked=torch.as_tensor(batch.liked))
    logits = (users @ item_vecs.T + item_bias).masked_fill(~torch.as_tensor(ID_ROWS < 30), float("-inf"))
    reference = torch.nn.functional.cross_entropy(logits, torch.as_tensor(batch.targets))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    reference.backward()
    for (name, a), b in zip(one.named_parameters(), two.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
