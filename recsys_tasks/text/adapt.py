"""``text.adapt``: LoRA on the text encoder (peft), trained on what the training interactions say texts mean.

Pairs (anchor, positive) come from the split's training part only, never from a held-out user or item:
- item -> item: two items one user liked (new items then land near what the same people like);
- taste -> item: the stated-taste sentence of a user's liked genres (as the protocol phrases it) and an item they
  liked; profile -> item: a user's profile text and an item they liked.
The loss is the contrastive one with in-batch negatives (cosine times a scale, cross-entropy over the batch; rows
whose positive is the same text are not each other's negatives). The base weights stay frozen, peft adds LoRA to
the attention layers it knows for the architecture, and training is early-stopped on the pairs of held-out users
(the base encoder's loss competes: an adapter that does not beat it is not used). The kept adapter is merged into
the weights, so what comes out is a plain encoder folder that any consumer of ``text.model`` loads
(docs/decisions/0023-lora-text-encoder.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_tasks.config import TextConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.text.encoder import TextEncoder
from recsys_tasks.text.texts import item_text, profile_text, stated_taste

log = logging.getLogger(__name__)

__all__ = ["Pairs", "adapt_encoder", "training_pairs"]

SCALE = 20.0  # cosine -> logit (sentence-transformers' MultipleNegativesRankingLoss default)
PER_USER = 6  # pairs drawn per sampled user: 2 item -> item, 2 taste -> item, 2 profile -> item


@dataclass(frozen=True)
class Pairs:
    anchors: list[str]
    positives: list[str]

    def __len__(self) -> int:
        return len(self.anchors)


def training_pairs(
    dataset: Dataset, train: pd.DataFrame, threshold: float, max_pairs: int, seed: int, validation_frac: float = 0.1
) -> tuple[Pairs, Pairs]:
    """(training pairs, validation pairs) from the liked interactions of ``train``: at most ``max_pairs`` in all,
    from a seeded sample of users with two or more liked items; ``validation_frac`` of those users' pairs (whole
    users) are held out for early stopping."""
    rng = np.random.default_rng(seed)
    items = dataset.items.reset_index(drop=True)
    row = pd.Index(items["item_id"].astype(str))
    liked = train[train["rating"] >= threshold]
    at = row.get_indexer(liked["item_id"].astype(str))
    codes, users = pd.factorize(liked["user_id"].astype(str))  # hashed, not sorted: linear in interactions
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(users))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    eligible = np.flatnonzero(counts >= 2)
    chosen = rng.permutation(eligible)[: max(1, max_pairs // PER_USER)]
    texts: dict[int, str] = {}
    genres = dataset.genre_lists()
    profiles = dataset.users.assign(user_id=dataset.users["user_id"].astype(str)).set_index("user_id")

    def text_of(r: int) -> str:
        if r not in texts:
            texts[r] = item_text(items.iloc[r].to_dict())
        return texts[r]

    held = set(rng.permutation(chosen)[: int(round(validation_frac * len(chosen)))].tolist())
    out: dict[bool, tuple[list[str], list[str]]] = {False: ([], []), True: ([], [])}
    for u in chosen:
        rows = at[order[starts[u] : starts[u] + counts[u]]]
        anchors, positives = out[bool(u in held)]
        taste = stated_taste([genres[r] for r in rows])
        profile = profile_text(profiles.loc[users[u]].to_dict()) if users[u] in profiles.index else None
        for _ in range(PER_USER // 3):
            a, b = rng.choice(rows, 2, replace=False)
            anchors.append(text_of(int(a)))
            positives.append(text_of(int(b)))
            for sentence in (taste, profile):
                if sentence:
                    anchors.append(sentence)
                    positives.append(text_of(int(rng.choice(rows))))
    return Pairs(*out[False]), Pairs(*out[True])


def adapt_encoder(
    encoder: TextEncoder, train: Pairs, validation: Pairs, cfg: TextConfig, seed: int
) -> dict[str, float]:
    """LoRA-train ``encoder`` in place on ``train`` (``cfg.adapt_*``), keep the state with the lowest validation loss
    (the base weights included), merge it into ``encoder.model``; a report of what happened."""
    import torch
    from peft import LoraConfig, get_peft_model

    if len(train) < 2:
        raise ValueError(f"text.adapt: {len(train)} training pairs; at least 2 are needed (too few liked interactions)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    base = encoder.model.float()  # trained in float32 (CUDA encodes in float16 afterwards)
    model = get_peft_model(base, LoraConfig(r=cfg.adapt_rank, lora_alpha=2 * cfg.adapt_rank, lora_dropout=0.1))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.adapt_lr)
    batch = cfg.adapt_batch

    def loss_of(anchors: list[str], positives: list[str]) -> torch.Tensor:
        a, p = _embed(encoder, model, anchors), _embed(encoder, model, positives)
        logits = SCALE * a @ p.T
        codes = pd.factorize(pd.Series(positives))[0]
        same = torch.as_tensor((codes[:, None] == codes[None, :]) & ~np.eye(len(codes), dtype=bool), device=a.device)
        logits = logits.masked_fill(same, float("-inf"))
        return torch.nn.functional.cross_entropy(logits, torch.arange(len(anchors), device=a.device))

    def validate() -> float:
        model.eval()
        losses = []
        with torch.no_grad():
            for s in range(0, len(validation), batch):
                if len(validation.anchors[s : s + batch]) >= 2:
                    losses.append(
                        loss_of(validation.anchors[s : s + batch], validation.positives[s : s + batch]).item()
                    )
        return float(np.mean(losses)) if losses else float("nan")

    start = time.perf_counter()
    best = base_loss = validate()
    best_state = None  # None: the base weights (no adapter) are best
    epochs, stale, steps = 0, 0, 0
    for _ in range(cfg.adapt_epochs):
        model.train()
        order = rng.permutation(len(train))
        for s in range(0, len(order) - 1, batch):
            idx = order[s : s + batch]
            if len(idx) < 2:
                continue
            loss = loss_of([train.anchors[i] for i in idx], [train.positives[i] for i in idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        epochs += 1
        val = validate()
        log.info("text.adapt epoch %d: validation loss %.4f (base %.4f)", epochs, val, base_loss)
        if np.isnan(best) or val < best - 1e-4:
            best, stale = val, 0
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            stale += 1
            if stale >= cfg.adapt_patience:
                break
    if best_state is None:  # no epoch beat the base encoder: the LoRA layers removed, nothing merged
        merged = model.unload().eval()
    else:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in best_state:
                    p.copy_(best_state[name])
        merged = model.merge_and_unload().eval()
    if encoder.device.type == "cuda":
        merged = merged.half()
    encoder.model = merged
    return {
        "adapt_pairs": float(len(train)),
        "adapt_validation_pairs": float(len(validation)),
        "adapt_epochs": float(epochs),
        "adapt_steps": float(steps),
        "adapt_base_loss": base_loss,
        "adapt_loss": best,
        "adapt_used": float(best_state is not None),
        "adapt_seconds": time.perf_counter() - start,
    }


def _embed(encoder: TextEncoder, model, texts: list[str]):
    """Mean-pooled, L2-normalised vectors of ``texts`` through ``model`` (with gradients where it has them)."""
    import torch

    enc = encoder.tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt")
    enc = {k: v.to(encoder.device) for k, v in enc.items()}
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
