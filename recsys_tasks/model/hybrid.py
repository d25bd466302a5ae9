"""The hybrid two-tower model: content towers that transfer, ID parts that specialise.

Item tower (DropoutNet): ``v_i = f(text_i ⊕ kg_i) + e_i·keep_i`` and
``b_i = g(text_i ⊕ kg_i) + c_i·keep_i``, where ``e_i, c_i`` are the item's ID embedding and
bias. During training ``keep_i`` is dropped at random so the content part alone must rank
well; a new item (no ID row) is served by the content part only.

User tower: ``u = h(demographics ⊕ KG(demographic values) ⊕ text(profile) ⊕ text(taste)·t
⊕ pool(v_history) ⊕ log(1+|history|)) + g(|history|)·pool(v_history)``, so it serves 0
interactions (profile, perhaps a sentence) up to a long history with one set of weights; the
direct path (FISM) scores an item by its similarity to the history, with a learned gate ``g``
of the history's length (a few items are weak evidence, a long history strong). ``pool`` is a
weighted mean: a liked item weighs 1, one rated below the positive threshold a learned ``w``
(``exp`` of a scalar that starts at 0, so at 1): how much a disliked item still says about what
the user will like (docs/decisions/0007-disliked-weight-pool.md).

Score: ``s(u, i) = u · v_i + b_i`` (a popularity-like prior is ``b_i``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of the inputs; saved with the weights so a bundle can rebuild the module."""

    content_dim: int  # text dim + KG dim
    text_dim: int
    kg_dim: int
    n_id_items: int  # items with an ID row (seen in training)
    n_genders: int
    n_ages: int
    n_occupations: int
    dim: int = 64
    hidden: int = 256
    demo_dim: int = 16
    inputs: tuple[str, ...] = ("text", "kg", "demographics")  # the others are zeroed (ablations)

    def to_dict(self) -> dict:
        return asdict(self)


class HybridModel(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d, h = spec.dim, spec.hidden
        self.item_content = nn.Sequential(nn.Linear(spec.content_dim, h), nn.GELU(), nn.Linear(h, d))
        self.item_content_bias = nn.Sequential(nn.Linear(spec.content_dim, h // 4), nn.GELU(), nn.Linear(h // 4, 1))
        self.item_id = nn.Embedding(spec.n_id_items + 1, d, padding_idx=spec.n_id_items)  # last row: "no ID"
        self.item_id_bias = nn.Embedding(spec.n_id_items + 1, 1, padding_idx=spec.n_id_items)
        nn.init.normal_(self.item_id.weight, std=0.01)
        with torch.no_grad():  # normal_ also filled the padding row: a new item must get no ID part
            self.item_id.weight[spec.n_id_items].zero_()
        nn.init.zeros_(self.item_id_bias.weight)
        self.gender = nn.Embedding(spec.n_genders + 1, spec.demo_dim)  # row 0: unknown
        self.age = nn.Embedding(spec.n_ages + 1, spec.demo_dim)
        self.occupation = nn.Embedding(spec.n_occupations + 1, spec.demo_dim)
        user_in = 3 * spec.demo_dim + spec.kg_dim + 2 * spec.text_dim + 1 + d + 1
        self.user = nn.Sequential(nn.Linear(user_in, h), nn.GELU(), nn.Dropout(0.1), nn.Linear(h, d))
        self.history_gate = nn.Linear(1, 1)  # FISM-style path, gated by history length (short = weak)
        self.disliked_log_weight = nn.Parameter(torch.zeros(()))  # a disliked history item's log weight in the pool
        on = {name: float(name in spec.inputs) for name in ("text", "kg", "demographics")}
        self._on = on
        mask = torch.cat([torch.full((spec.text_dim,), on["text"]), torch.full((spec.kg_dim,), on["kg"])])
        self.register_buffer("content_mask", mask, persistent=False)  # not in the state dict: old bundles load

    def items(
        self, content: torch.Tensor, id_rows: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Item vectors (n, d) and biases (n,); ``id_rows`` = n_id_items where an item has no ID."""
        vec, bias, id_vec, id_bias = self.item_parts(content, id_rows)
        if keep is not None:  # DropoutNet: hide the ID part of some items
            id_vec, id_bias = id_vec * keep.unsqueeze(-1), id_bias * keep
        return vec + id_vec, bias + id_bias

    def item_parts(
        self, content: torch.Tensor, id_rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The content tower's vectors (n, d) and biases (n,), then the ID parts' (n, d) and (n,): `items`
        adds them (training adds the ID parts once with and once without DropoutNet's mask)."""
        return *self.content_parts(content), *self.id_parts(id_rows)

    def content_parts(self, content: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The content tower's vectors (n, d) and biases (n,): what a new item gets."""
        content = content * self.content_mask
        return self.item_content(content), self.item_content_bias(content).squeeze(-1)

    def id_parts(self, id_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The item ID embeddings (n, d) and biases (n,); zeros where ``id_rows`` = n_id_items (no ID)."""
        return self.item_id(id_rows), self.item_id_bias(id_rows).squeeze(-1)

    def users(
        self,
        demo: torch.Tensor,
        kg_demo: torch.Tensor,
        profile_text: torch.Tensor,
        taste_text: torch.Tensor,
        has_taste: torch.Tensor,
        history: torch.Tensor,
        history_mask: torch.Tensor,
        item_vecs: torch.Tensor,
        history_liked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """User vectors (b, d).

        demo (b, 3) int: gender, age band, occupation rows (0 = unknown);
        history (b, L) int rows into ``item_vecs``; history_mask (b, L) float, 1 where real;
        history_liked (b, L) float, 1 where liked (None: every item).
        """
        n = history_mask.sum(1, keepdim=True)
        weight = history_mask
        if history_liked is not None:
            weight = history_mask * (history_liked + (1.0 - history_liked) * self.disliked_log_weight.exp())
        # embedding (not item_vecs[history]): the same gather, its backward an index_add rather than index_put
        gathered = torch.nn.functional.embedding(history, item_vecs)
        pooled = (gathered * weight.unsqueeze(-1)).sum(1) / weight.sum(1, keepdim=True).clamp(min=1e-6)
        on = self._on
        demographics = torch.cat([self.gender(demo[:, 0]), self.age(demo[:, 1]), self.occupation(demo[:, 2])], 1)
        has_taste = has_taste * on["text"]
        x = torch.cat(
            [
                demographics * on["demographics"],
                kg_demo * (on["kg"] * on["demographics"]),
                profile_text * (on["text"] * on["demographics"]),
                taste_text * has_taste.unsqueeze(-1),
                has_taste.unsqueeze(-1),
                pooled,
                torch.log1p(n) / 3.0,
            ],
            dim=1,
        )
        gate = torch.sigmoid(self.history_gate(torch.log1p(n)))
        return self.user(x) + gate * pooled


class UserTower:
    """`HybridModel.users` in NumPy, from a snapshot of the module's weights, for serving on the CPU.

    The same arithmetic (tested equal to the module's within float32 rounding); what it saves is
    torch's per-operator dispatch, most of a small batch's time (docs/benchmarks.md, "Serving").
    """

    def __init__(self, model: HybridModel):
        def array(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy().copy()

        self.gender, self.age, self.occupation = (array(m.weight) for m in (model.gender, model.age, model.occupation))
        first, last = model.user[0], model.user[3]
        self.w1, self.b1, self.w2, self.b2 = (
            array(first.weight).T.copy(),
            array(first.bias),
            array(last.weight).T.copy(),
            array(last.bias),
        )
        self.gate_w, self.gate_b = float(model.history_gate.weight.item()), float(model.history_gate.bias.item())
        self.disliked_weight = np.float32(np.exp(model.disliked_log_weight.item()))
        self.on = dict(model._on)

    def __call__(
        self,
        demo: np.ndarray,
        kg_demo: np.ndarray,
        profile_text: np.ndarray,
        taste_text: np.ndarray,
        has_taste: np.ndarray,
        history: np.ndarray,
        history_mask: np.ndarray,
        item_vecs: np.ndarray,
        history_liked: np.ndarray | None = None,
    ) -> np.ndarray:
        """User vectors (b, d) float32; the arguments as `HybridModel.users`'s, as arrays."""
        from scipy.special import erf

        on = self.on
        n = history_mask.sum(1, keepdims=True, dtype=np.float32)
        weight = history_mask
        if history_liked is not None:
            weight = history_mask * (history_liked + (1.0 - history_liked) * self.disliked_weight)
        pooled = np.einsum("bl,bld->bd", weight, item_vecs[history]) / np.maximum(
            weight.sum(1, keepdims=True, dtype=np.float32), np.float32(1e-6)
        )
        demographics = np.concatenate([self.gender[demo[:, 0]], self.age[demo[:, 1]], self.occupation[demo[:, 2]]], 1)
        has_taste = has_taste * on["text"]
        log_n = np.log1p(n)
        x = np.concatenate(
            [
                demographics * on["demographics"],
                kg_demo * (on["kg"] * on["demographics"]),
                profile_text * (on["text"] * on["demographics"]),
                taste_text * has_taste[:, None],
                has_taste[:, None],
                pooled,
                log_n / 3.0,
            ],
            axis=1,
            dtype=np.float32,
        )
        h = x @ self.w1 + self.b1
        h = 0.5 * h * (1.0 + erf(h * np.float32(1 / np.sqrt(2.0))))  # exact GELU, as nn.GELU()
        gate = 1.0 / (1.0 + np.exp(-(log_n * self.gate_w + self.gate_b)))
        return (h @ self.w2 + self.b2 + gate * pooled).astype(np.float32, copy=False)


def save_model(model: HybridModel, path) -> None:
    torch.save({"spec": model.spec.to_dict(), "state_dict": model.state_dict()}, path)


def load_model(path, device: str = "cpu") -> HybridModel:
    """Rebuild from a checkpoint; ``weights_only=True``: nothing in it is unpickled as code."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    spec = checkpoint["spec"]
    model = HybridModel(ModelSpec(**{**spec, "inputs": tuple(spec.get("inputs", ModelSpec.inputs))}))
    # saved before the disliked items' weight: 0 (a weight of 1), the plain mean they were trained with
    state = {"disliked_log_weight": torch.zeros(()), **checkpoint["state_dict"]}
    model.load_state_dict(state)
    return model.to(device).eval()
