"""finetune's training step: the loss of one `Batch`, over the full catalogue or a sampled softmax.

Where the trainable items number at most ``negatives`` (MovieLens-100K: 1,682), the step is the exact
softmax over every trainable item, the item tower run over the whole catalogue; past that, the item tower
runs only over the rows the step needs (the batch's targets, its history items and a shared sample of
negatives) and the loss is `sampled_softmax.sampled_softmax_loss` (docs/decisions/0013-sampled-softmax.md).
Either way the item IDs are hidden at random (``id_dropout``) on the scored side only: a history is pooled
from items as serving sees them. With the sampled softmax a history's items take their content vectors from a
table of the whole catalogue refreshed every ``history_refresh`` steps (no gradient into the content tower through
the pooling: the history items of a batch are most of a 20k catalogue, the targets and negatives a tenth), their ID
parts live. With the towers frozen (the item-ID stage, `freeze`), every content vector comes from one table.
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
    ``alpha``: q ∝ (count + 1)^alpha; ``seed``: the sampler's; ``history_refresh``: with the sampled softmax,
    steps between two refreshes of the histories' content table (0: histories through the live tower).
    """

    BLOCK = 8192  # catalog rows per pass of the content tower when a table is made

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
        history_refresh: int = 0,
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
        self.history_refresh = int(history_refresh) if self.sampled else 0
        self.frozen: tuple[torch.Tensor, torch.Tensor] | None = None  # every row's content (vec, bias): towers frozen
        self._table: torch.Tensor | None = None  # the histories' content vectors, refreshed
        self._since_refresh = 0

    def __call__(self, model, batch: Batch) -> torch.Tensor:
        return self._sampled(model, batch) if self.sampled else self._full(model, batch)

    def freeze(self, model) -> None:
        """Content vectors and biases from one table from now on: the towers no longer learn."""
        self.frozen = self.content_table(model)

    def thaw(self) -> None:
        self.frozen, self._table = None, None

    def content_table(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """The content tower's vectors (n_rows, d) and biases (n_rows,) of the whole catalogue, no gradient."""
        with torch.no_grad():
            parts = [
                model.content_parts(self.content[s : s + self.BLOCK]) for s in range(0, len(self.content), self.BLOCK)
            ]
        return torch.cat([v for v, _ in parts]), torch.cat([b for _, b in parts])

    def _content(self, model, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Content vectors and biases of ``rows`` (None: every row): the live tower's, or the frozen table's."""
        if self.frozen is not None:
            vec, bias = self.frozen
            return (vec, bias) if rows is None else (vec[rows], bias[rows])
        return model.content_parts(self.content if rows is None else self.content[rows])

    def _users(self, model, batch: Batch, history_vecs: torch.Tensor, history: np.ndarray) -> torch.Tensor:
        inputs = [torch.as_tensor(a, device=self.device) for a in batch.inputs]
        inputs[5] = torch.as_tensor(history, device=self.device)
        return model.users(*inputs, history_vecs, history_liked=torch.as_tensor(batch.liked, device=self.device))

    def _full(self, model, batch: Batch) -> torch.Tensor:
        """Softmax over every trainable item; the item tower over the whole catalogue, once."""
        keep = (torch.rand(len(self.id_rows), device=self.device) >= self.id_dropout).float()
        vec, bias = self._content(model, None)
        id_vec, id_bias = model.id_parts(self.id_rows)
        item_vecs, item_bias = vec + id_vec * keep.unsqueeze(-1), bias + id_bias * keep
        users = self._users(model, batch, vec + id_vec, batch.inputs[5])
        logits = (users @ item_vecs.T + item_bias).float().masked_fill(~self.trainable, float("-inf"))
        return torch.nn.functional.cross_entropy(logits, torch.as_tensor(batch.targets, device=self.device))

    def _sampled(self, model, batch: Batch) -> torch.Tensor:
        """Sampled softmax; the item tower over the targets and negatives (and, with no history table, the
        history items), once."""
        assert self.sampler is not None
        drawn, log_expected = self.sampler.draw(self.negatives)
        hist, mask = batch.inputs[5], batch.inputs[6] > 0
        live_history = self.history_refresh == 0 and self.frozen is None
        scored = [batch.targets, drawn, hist[mask]] if live_history else [batch.targets, drawn]
        rows, inverse = np.unique(np.concatenate(scored), return_inverse=True)
        b, n = len(batch.targets), len(drawn)
        at_target, at_drawn = inverse[:b], inverse[b : b + n]
        rows_t = torch.as_tensor(rows, device=self.device)
        vec, bias = self._content(model, rows_t)
        id_vec, id_bias = model.id_parts(self.id_rows[rows_t])
        keep = (torch.rand(len(rows), device=self.device) >= self.id_dropout).float()
        scored_vecs, scored_bias = vec + id_vec * keep.unsqueeze(-1), bias + id_bias * keep
        history = np.zeros_like(hist)
        if live_history:
            history[mask] = inverse[b + n :]
            history_vecs = vec + id_vec
        else:  # the history items' content from the table, their ID parts live
            at, back = np.unique(np.concatenate([[0], hist[mask]]), return_inverse=True)
            history[mask] = back[1:]
            at_t = torch.as_tensor(at, device=self.device)
            history_vecs = self._history_table(model)[at_t] + model.id_parts(self.id_rows[at_t])[0]
        users = self._users(model, batch, history_vecs, history)
        target_t, drawn_t = (torch.as_tensor(a, device=self.device) for a in (at_target, at_drawn))
        hits = torch.as_tensor(batch.targets[:, None] == drawn[None, :], device=self.device)
        pick = torch.index_select  # not tensor[rows]: its backward is an index_add, half the cost of index_put
        return sampled_softmax_loss(
            users,
            pick(scored_vecs, 0, target_t),
            pick(scored_bias, 0, target_t),
            pick(scored_vecs, 0, drawn_t),
            pick(scored_bias, 0, drawn_t),
            torch.as_tensor(log_expected, device=self.device),
            hits,
        )

    def _history_table(self, model) -> torch.Tensor:
        """Every row's content vector for pooling histories: the frozen table, or one refreshed every
        ``history_refresh`` steps (the same steps on every rank of a data-parallel group)."""
        if self.frozen is not None:
            return self.frozen[0]
        if self._table is None or self._since_refresh >= self.history_refresh:
            self._table, self._since_refresh = self.content_table(model)[0], 0
        self._since_refresh += 1
        return self._table
