"""Scoring: the two towers' user and item vectors over the catalog, u·v + b, plus the content map's
profile term for the items without an ID (how close their text is to what the user liked).

On the CPU the user tower runs in NumPy (`hybrid.UserTower`), elsewhere the torch module does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recsys_tasks.data.dataset import age_band
from recsys_tasks.explain.reasons import liked
from recsys_tasks.model.bundle import Bundle
from recsys_tasks.model.sentences import Sentences
from recsys_tasks.protocol.queries import Query
from recsys_tasks.text.texts import profile_text

__all__ = ["Scoring"]

History = tuple[np.ndarray, np.ndarray]  # the catalog rows a model pools, and their ratings (0: a click)


class Scoring:
    """The model on a device, the catalog's item vectors and the user tower's inputs.

    ``bundle`` is shared with the recommender: a catalog it changes is read here.
    """

    def __init__(self, bundle: Bundle, model, device, sentences: Sentences):
        self.bundle, self.meta, self.model, self.device, self.sentences = bundle, bundle.meta, model, device, sentences
        self.n_id = int(self.meta["n_id_items"])
        self.text_dim = int(self.meta["text_dim"])
        self.threshold = float(self.meta.get("positive_threshold", 4.0))
        self._vocab = {
            k: {v: i + 1 for i, v in enumerate(self.meta["vocab"][k])} for k in ("gender", "age", "occupation")
        }
        self._kg_means: dict[tuple[str, ...], np.ndarray] = {}
        self.refresh()

    def refresh(self) -> None:
        """Recompute the item vectors (after training steps, or after the catalog changed)."""
        from recsys_tasks.model.hybrid import UserTower

        self.item_vecs, self.item_bias = self.item_vectors_of(self.bundle.item_content, self.bundle.catalog)
        self.catalog_changed()
        self.cpu_tower = UserTower(self.model) if self.device.type == "cpu" else None  # the weights may have changed

    def catalog_changed(self) -> None:
        """Forget what was derived from the item vectors and the catalog (`item_arrays`, `profile_columns`)."""
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._new_text: tuple[np.ndarray, np.ndarray] | None = None

    def item_vectors_of(self, content: np.ndarray, items: pd.DataFrame):
        """Item vectors (n, d) and biases (n,) of ``items`` (catalog rows) with ``content`` (their rows of
        it): the towers (+ the ID part), or for items without an ID the bundle's content map where it has one."""
        import torch

        id_rows = items["id_row"].to_numpy(dtype=np.int64, copy=True)  # a copy: torch wants a writable array
        with torch.inference_mode():
            vecs, bias = self.model.items(
                torch.as_tensor(np.ascontiguousarray(content, np.float32), device=self.device),
                torch.as_tensor(id_rows, device=self.device),
            )
            new = np.flatnonzero(id_rows >= self.n_id)
            content_map = self.bundle.content_map
            if content_map is not None and len(new):
                mapped_vecs, mapped_bias = content_map(
                    np.asarray(content)[new, : content_map.text_dim], items.iloc[new]
                )
                rows = torch.as_tensor(new, device=self.device)
                vecs[rows] = torch.as_tensor(mapped_vecs, dtype=vecs.dtype, device=self.device)
                bias[rows] = torch.as_tensor(mapped_bias, dtype=bias.dtype, device=self.device)
        return vecs, bias

    def item_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The item vectors (n, d) and biases (n,) as float32 NumPy arrays (views on the CPU), until they change."""
        if self._arrays is None:
            self._arrays = (
                self.item_vecs.detach().float().cpu().numpy(),
                self.item_bias.detach().float().cpu().numpy(),
            )
        return self._arrays

    # ------------------------------------------------------------ users
    def user_vectors(self, queries: Sequence[Query], histories: Sequence[History]) -> np.ndarray:
        """User vectors (b, d) float32; ``histories``: each query's pooled history rows and ratings."""
        max_hist = int(self.meta["max_history"])
        hist = np.full((len(queries), max(1, max_hist)), 0, dtype=np.int64)
        mask, is_liked = np.zeros(hist.shape, dtype=np.float32), np.zeros(hist.shape, dtype=np.float32)
        for q_i, (rows, ratings) in enumerate(histories):
            hist[q_i, : len(rows)], mask[q_i, : len(rows)] = rows, 1.0
            is_liked[q_i, : len(rows)] = liked(ratings, self.threshold)
        demo = np.array([self.demographic_rows(q.profile) for q in queries], dtype=np.int64)
        kg = np.stack([self.kg_demo_vector(q.profile) for q in queries])
        profile = self.sentences.vectors([profile_text(q.profile) for q in queries])
        has_taste = np.array([1.0 if q.text else 0.0 for q in queries], dtype=np.float32)
        taste = self.sentences.vectors([q.text or "" for q in queries]) * has_taste[:, None]
        if self.cpu_tower is not None:
            return self.cpu_tower(demo, kg, profile, taste, has_taste, hist, mask, self.item_arrays()[0], is_liked)
        import torch

        t = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        with torch.inference_mode():
            users = self.model.users(
                t(demo), t(kg), t(profile), t(taste), t(has_taste), t(hist), t(mask), self.item_vecs, t(is_liked)
            )
        return users.float().cpu().numpy()

    def demographic_rows(self, profile: dict) -> tuple[int, int, int]:
        """The profile's (gender, age band, occupation) rows of the model's vocabularies (0: unknown)."""
        return (
            self._vocab["gender"].get(str(profile.get("gender") or ""), 0),
            self._vocab["age"].get(age_band(profile.get("age")), 0),
            self._vocab["occupation"].get(str(profile.get("occupation") or ""), 0),
        )

    def kg_demo_vector(self, profile: dict) -> np.ndarray:
        """The mean KG vector of the profile's known demographic values (read-only: shared per combination)."""
        from recsys_tasks.kg.nodes import demographic_nodes

        nodes = tuple(n for n in demographic_nodes(profile) if n in self.bundle.kg_demo)
        vector = self._kg_means.get(nodes)  # at most one entry per combination of the KG's values
        if vector is None:
            vecs = [self.bundle.kg_demo[n] for n in nodes]
            vector = np.mean(vecs, axis=0).astype(np.float32) if vecs else np.zeros(self.meta["kg_dim"], np.float32)
            vector.flags.writeable = False
            self._kg_means[nodes] = vector
        return vector

    # ------------------------------------------------------------ scores
    def scores(self, users: np.ndarray, histories: Sequence[History]) -> np.ndarray:
        """(b, n_items) float32: u·v + b over the catalog, plus the profile term of the items without an ID."""
        if self.cpu_tower is not None:
            vecs, bias = self.item_arrays()
            scores = users @ vecs.T + bias
        else:
            import torch

            with torch.inference_mode():
                scores = torch.as_tensor(users, device=self.device) @ self.item_vecs.T + self.item_bias
                scores = scores.float().cpu().numpy()
        profile = self.profile_columns()
        if profile is not None:  # items without an ID: how close their text is to what the user liked
            cols, text = profile
            scores[:, cols] += self.text_profiles(histories) @ text.T
        return scores

    def liked_text(self, histories: Sequence[History]) -> np.ndarray:
        """(b, text_dim) float32: per history the unit mean text vector of the items it liked
        (`reasons.liked`, as the reasons cite them: rated at or above the positive threshold, or a
        click without a rating; zeros where there are none)."""
        out = np.zeros((len(histories), self.text_dim), np.float32)
        for q_i, (rows, ratings) in enumerate(histories):
            chosen = rows[liked(ratings, self.threshold)]
            if len(chosen):
                mean = self.bundle.item_content[chosen, : self.text_dim].mean(0)
                norm = float(np.linalg.norm(mean))
                if norm > 0:
                    out[q_i] = mean / norm
        return out

    def text_profiles(self, histories: Sequence[History]) -> np.ndarray:
        """(b, k): `liked_text` in the content map's profile basis (a map with a profile term)."""
        content_map = self.bundle.content_map
        assert content_map is not None and content_map.profile_basis is not None, (
            "text profiles are asked for only where `profile_columns` found a profile term"
        )
        return self.liked_text(histories) @ content_map.profile_basis.T

    def profile_columns(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(the catalog rows without an ID, ``profile_weight`` times their text in the content map's
        profile basis) until the catalog changes; None where the map has no profile term."""
        content_map = self.bundle.content_map
        if content_map is None or not content_map.has_profile:
            return None
        if self._new_text is None:
            cols = np.flatnonzero(self.bundle.catalog["id_row"].to_numpy() >= self.n_id)
            text = self.bundle.item_content[cols, : self.text_dim]
            self._new_text = (cols, (content_map.profile_weight * content_map.profile(text)).astype(np.float32))
        return self._new_text

    def index_arrays(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, biases) of catalog ``rows`` for a vector index: the item vectors, beside them the
        content map's profile term of the rows without an ID (0 for the others) where it has one:
        queried with `text_profiles` beside the user vectors, the index scores it too."""
        vecs, bias = self.item_arrays()
        rows = np.asarray(rows, np.int64)
        profile = self.profile_columns()
        if profile is None:
            return vecs[rows], bias[rows]
        cols, text = profile  # cols ascending: each row's place among them by binary search
        at = np.minimum(np.searchsorted(cols, rows), max(len(cols) - 1, 0))
        hit = cols[at] == rows if len(cols) else np.zeros(len(rows), bool)
        extra = np.zeros((len(rows), text.shape[1]), np.float32)
        extra[hit] = text[at[hit]]
        return np.hstack([vecs[rows], extra]), bias[rows]

    def similarities(self, row: int) -> np.ndarray:
        """(n_items,) cosines of every item vector with ``row``'s."""
        import torch

        with torch.inference_mode():
            unit = torch.nn.functional.normalize(self.item_vecs.float(), dim=-1)
            return (unit @ unit[row]).cpu().numpy()
