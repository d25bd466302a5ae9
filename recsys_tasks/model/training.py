"""finetune's training step: the loss of one `Batch`, over the full catalogue or a sampled softmax.

Where the trainable items number at most ``negatives`` (MovieLens-100K: 1,682), the step is the exact
softmax over every trainable item, the item tower run over the whole catalogue; past that, the item tower
runs only over the rows the step needs (the batch's targets, its history items and a shared sample of
negatives) and the loss is `sampled_softmax.sampled_softmax_loss` (docs/decisions/0013-sampled-softmax.md).
Either way the item IDs are hidden at random (``id_dropout``) on the scored side only: a history is pooled
from items as serving sees them.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys_tasks.model.batches import Batch
from recsys_tasks.model.sampled_softmax import NegativeSampler, sampled_softmax_loss

__all__ = ["StepLoss"]


class StepLoss:
    """The training loss of a batch for a model, its catalogue (``content``, ``id_rows``) on ``device``.

    ``target_counts``: per catalog row how often it is a training target (the negatives' popularity);
    ``negatives``: the sample's size (0, or at least the trainable items: the full softmax);
    ``alpha``: q ∝ (count + 1)^alpha; ``seed``: the sampler's.
    """

    def __init__(
        self,
        content: np.ndarray,
        id_rows: np.ndarray,
        n_id_items: int,
        target_counts: np.ndarray,
        *,
        negatives: int,
        alpha: float,
        id_dropout: float,
        seed: int,
        device: torch.device,
    ):
        self.device, self.id_dropout = device, id_dropout
        self.content = torch.as_tensor(content, device=device)
        self.id_rows = torch.as_tensor(np.asarray(id_rows, np.int64).copy(), device=device)
        trainable = np.flatnonzero(np.asarray(id_rows) < n_id_items)
        self.trainable = torch.as_tensor(np.asarray(id_rows) < n_id_items, device=device)
        self.negatives = int(negatives)
        self.sampled = 0 < self.negatives < len(trainable)
        self.sampler = (
            NegativeSampler(trainable, np.asarray(target_counts)[trainable], alpha, seed) if self.sampled else None
        )

    def __call__(self, model, batch: Batch) -> torch.Tensor:
        return self._sampled(model, batch) if self.sampled else self._full(model, batch)

    def _users(self, model, batch: Batch, history_vecs: torch.Tensor, history: np.ndarray) -> torch.Tensor:
        inputs = [torch.as_tensor(a, device=self.device) for a in batch.inputs]
        inputs[5] = torch.as_tensor(history, device=self.device)
        return model.users(*inputs, history_vecs, history_liked=torch.as_tensor(batch.liked, device=self.device))

    def _full(self, model, batch: Batch) -> torch.Tensor:
        """Softmax over every trainable item; the item tower over the whole catalogue."""
        keep = (torch.rand(len(self.id_rows), device=self.device) >= self.id_dropout).float()
        item_vecs, item_bias = model.items(self.content, self.id_rows, keep)
        history_vecs, _ = model.items(self.content, self.id_rows)
        users = self._users(model, batch, history_vecs, batch.inputs[5])
        logits = (users @ item_vecs.T + item_bias).masked_fill(~self.trainable, float("-inf"))
        return torch.nn.functional.cross_entropy(logits, torch.as_tensor(batch.targets, device=self.device))

    def _sampled(self, model, batch: Batch) -> torch.Tensor:
        """Sampled softmax; the item tower over the union of targets, history items and negatives, once."""
        assert self.sampler is not None
        drawn, log_expected = self.sampler.draw(self.negatives)
        hist, mask = batch.inputs[5], batch.inputs[6] > 0
        rows, inverse = np.unique(np.concatenate([batch.targets, drawn, hist[mask]]), return_inverse=True)
        b, n = len(batch.targets), len(drawn)
        at_target, at_drawn = inverse[:b], inverse[b : b + n]
        history = np.zeros_like(hist)
        history[mask] = inverse[b + n :]
        rows_t = torch.as_tensor(rows, device=self.device)
        vec, bias, id_vec, id_bias = model.item_parts(self.content[rows_t], self.id_rows[rows_t])
        keep = (torch.rand(len(rows), device=self.device) >= self.id_dropout).float()
        scored_vecs, scored_bias = vec + id_vec * keep.unsqueeze(-1), bias + id_bias * keep
        users = self._users(model, batch, vec + id_vec, history)
        target_t, drawn_t = (torch.as_tensor(a, device=self.device) for a in (at_target, at_drawn))
        hits = torch.as_tensor(batch.targets[:, None] == drawn[None, :], device=self.device)
        return sampled_softmax_loss(
            users,
            scored_vecs[target_t],
            scored_bias[target_t],
            scored_vecs[drawn_t],
            scored_bias[drawn_t],
            torch.as_tensor(log_expected, device=self.device),
            hits,
        )
