"""Why an item is recommended: one short sentence per recommended item, from the model's own inputs.

For each (query, recommended item) the first kind that applies wins, strongest evidence first.
"History" is what the model pooled (the last ``max_history`` items), less the items the user rated
below the positive threshold; item vectors are compared by their cosine centred on the trained
items' mean (raw vectors share a large common direction).

1. KG link: the item shares a KG entity with a history item, and the model's vectors agree
   (cosine >= `RELATED_MIN`) -> "shares its director with Alien" (strongest relation first).
   A relation is used only if the items it links are liked together in training at least
   `kg.links.RELATION_LIFT` times as often as random pairs (`kg.links.reason_links`): a KG whose
   links do not match what people like together names nothing;
2. stated genre: the stated taste names one of the item's genres -> "matches 'sci-fi'";
3. similar: a history item's vector is close (cosine >= `SIMILAR_MIN`) -> "similar to Alien";
4. stated taste: the item's text vector is unusually close to the taste sentence's (`TASTE_Z`
   standard deviations above the catalog's mean cosine with it, from the catalog's text mean and
   covariance: O(dim²) per sentence, whatever the catalog's size) -> "matches 'slow films about…'";
5. segment: among the `TOP_N` most liked items, in training, of the user's demographic segment
   (finest first; segments with enough training users: `model.popularity`, which the caller asks)
   -> "popular with female students aged 18-24";
6. popular: among the `TOP_N_OVERALL` most liked items -> "popular overall";
7. similar, weaker: the closest history item at cosine >= `RELATED_MIN` -> "similar to Alien";
8. new item (no interactions): the closest history item at cosine >= `RELATED_MIN` -> "new: similar
   content to Alien", else "new in the catalog";
9. otherwise the prior, stated as such: "a top match for your profile" (with one), "a top pick overall".

A reason names only what the request or the person's own history holds (a genre or a title it
names, a history item rated at or above the threshold, a KG link between them) or a popularity
prior stated as such: never an item the person has not named ("similar to Star Wars" to someone
who never mentioned it).

Everything per bundle is precomputed once (`Explainer`); per request only the top-k items and
the history are touched. The KG kind needs the bundle's ``item_links`` (`kg.links.reason_links`,
written by finetune): a bundle saved without them gets every other kind. Stated genres are read
by `genres.GenreMatcher`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recsys_tasks.data.dataset import age_band
from recsys_tasks.explain.genres import GenreMatcher, genre_set
from recsys_tasks.protocol.queries import Query

__all__ = [
    "LEVELS",
    "TOP_N",
    "Explainer",
    "describe_segment",
    "display_title",
    "genre_set",
    "liked",
    "quote",
    "segment_key",
]

SIMILAR_MIN = 0.9  # centred cosine of item vectors: "similar to" before the weaker kinds (~top 5% of pairs)
RELATED_MIN = 0.5  # the least cosine a KG link or any other "similar" needs (~top 30% of pairs)
TASTE_Z = 2.5  # standard scores of the taste cosine: about the top 1-2% of the catalog for a sentence
TOP_N = 50  # "popular with <segment>": among the segment's N most liked items
TOP_N_OVERALL = 100  # "popular overall": among the N most liked items
TEXT_SAMPLE = 10_000  # catalog rows the text mean and covariance are estimated from
MAX_QUOTE = 40  # characters of a stated taste quoted
UNIT_ROWS = 200_000  # catalogs up to this size keep every item's centred unit vector (51 MB at 64 dims)
NEW = "new in the catalog"  # a new item close to none of the history's items
FALLBACK = ("a top match for your profile", "a top pick overall")  # a trained item, likewise (with a profile or not)

# Strongest first: the relation a reason names when an item shares several with the history.
PHRASES = {
    "director": "shares its director with {}",
    "writer": "shares a writer with {}",
    "actor": "shares an actor with {}",
    "cinematographer": "shares its cinematographer with {}",
    "producer": "shares a producer with {}",
    "subject": "shares a subject with {}",
    "production company": "shares a production company with {}",
    "award": "won the same award as {}",
}
RELATION_RANK = {r: i for i, r in enumerate(PHRASES)}
RELATIONS_BY_RANK = list(PHRASES)

# (attributes) of the segments tried, finest first (`model.popularity` counts each segment's likes).
LEVELS = (
    ("gender", "age", "occupation"),
    ("age", "occupation"),
    ("gender", "age"),
    ("occupation",),
    ("age",),
    ("gender",),
)
_GROUP = {
    "entertainment": "people in entertainment",
    "healthcare": "people in healthcare",
    "marketing": "people in marketing",
    "none": "people with no occupation",
    "other": "people with other occupations",
    "retired": "retired people",
    "salesman": "salespeople",
}
_GENDER = {"F": ("female", "women"), "M": ("male", "men")}
_ARTICLES = ("The", "A", "An", "Les", "La", "Le", "Il", "El", "Das", "Der", "Die")


def liked(ratings: np.ndarray, threshold: float) -> np.ndarray:
    """Which history items count as liked: rated at or above ``threshold``, or not rated (0: a click)."""
    ratings = np.asarray(ratings)
    return (ratings <= 0) | (ratings >= threshold)


def segment_key(values: Mapping[str, str]) -> tuple[str, ...]:
    """("gender=F", "age=18-24") for the attributes given, in `LEVELS`' attribute order."""
    return tuple(f"{a}={values[a]}" for a in ("gender", "age", "occupation") if a in values)


# ---------------------------------------------------------------- words
def display_title(title: Any, item_id: str = "") -> str:
    """ "Godfather, The" -> "The Godfather" (MovieLens' sort form); the id when there is no title."""
    title = str(title or "").strip() or f"item {item_id}"
    for article in _ARTICLES:
        suffix = f", {article}"
        if title.endswith(suffix):
            return f"{article} {title[: -len(suffix)]}"
    return title


def describe_segment(values: Mapping[str, str]) -> str | None:
    """ "female students aged 18-24", "women", "viewers under 18"; None if it cannot be said."""
    gender, age, occupation = values.get("gender"), values.get("age"), values.get("occupation")
    if gender is not None and gender not in _GENDER:
        return None
    adjective, noun = _GENDER.get(gender or "", ("", "viewers"))
    if occupation:
        group = _GROUP.get(occupation, f"{occupation}s")
        if not gender:
            who = group
        elif "people" in group:
            who = group.replace("people", noun)
        else:
            who = f"{adjective} {group}"
    else:
        who = noun
    if age:
        who += " under 18" if age == "under 18" else f" aged {age}"
    return who


def quote(text: str) -> str:
    """A stated taste, shortened for quoting: "I like slow films about space travel." -> 'I like slow films about…'."""
    text = " ".join(text.split()).rstrip(".!?")
    if len(text) <= MAX_QUOTE:
        return text
    cut = text[:MAX_QUOTE].rsplit(" ", 1)[0]
    return cut + "…"


# ---------------------------------------------------------------- per bundle
class Explainer:
    """The lookups of one bundle's catalog, KG links and training popularity; `explain` per request."""

    def __init__(
        self,
        catalog: pd.DataFrame,
        content: np.ndarray,
        links: pd.DataFrame | None,
        popular: Mapping[tuple[str, ...], Sequence[str]],
        n_id_items: int,
        text_dim: int,
        threshold: float = 4.0,
        top_n_overall: int = TOP_N_OVERALL,
        taste_z: float = TASTE_Z,
    ):
        """``popular``: the most liked item ids, most first, of each segment (`segment_key`) with
        enough training users, under ``()`` every liked item (`model.popularity.most_liked`)."""
        self.threshold, self.n_id_items, self.text_dim = float(threshold), int(n_id_items), int(text_dim)
        self.min_taste_z = float(taste_z)
        # The catalog's unit text vectors: mean (d,) and covariance (d, d), so the cosines of a
        # sentence with every item have mean t·mean and variance t·cov·t without touching the items.
        sample = content[:, : self.text_dim]
        if len(sample) > TEXT_SAMPLE:
            sample = sample[np.sort(np.random.default_rng(0).choice(len(sample), TEXT_SAMPLE, replace=False))]
        sample = _unit(sample).astype(np.float64)
        self._text_mean = sample.mean(0) if len(sample) else np.zeros(self.text_dim)
        self._text_cov = np.cov(sample, rowvar=False) if len(sample) > 1 else np.zeros((self.text_dim,) * 2)
        item_ids = catalog["item_id"].astype(str).tolist()
        self._row = {item: r for r, item in enumerate(item_ids)}
        self.titles = [display_title(t, i) for t, i in zip(catalog.get("title", [""] * len(item_ids)), item_ids)]
        self.genres = [genre_set(g) for g in catalog.get("genres", [""] * len(item_ids))]
        self.trained = (catalog["id_row"].to_numpy() < self.n_id_items).tolist()
        self._trained_rows = np.flatnonzero(self.trained)
        self._genre_matcher = GenreMatcher(g for gs in self.genres for g in gs)
        # KG: per entity the frozenset of its (relation, value) columns; a column's id is
        # rank * stride + index, so the strongest relation two entities share is min(shared) // stride.
        links = links if links is not None else pd.DataFrame(columns=["entity_id", "relation", "value"])
        links = links[links["relation"].isin(RELATION_RANK)]
        entities = [str(e) for e in catalog.get("entity_id", [""] * len(item_ids))]
        col_codes, cols = pd.factorize(links["relation"] + "\t" + links["value"], sort=True)
        self._stride = max(1, len(cols))
        col_ids = (
            np.array([RELATION_RANK[c.split("\t", 1)[0]] for c in cols], np.int64)[col_codes] * self._stride + col_codes
            if len(cols)
            else np.zeros(0, np.int64)
        )
        self._entity_cols: dict[str, frozenset[int]] = {
            e: frozenset(ids.tolist())
            for e, ids in pd.Series(col_ids, index=links["entity_id"].to_numpy())
            .groupby(level=0)
            .agg(lambda s: s.to_numpy())
            .items()
        }
        self.entity_cols = [self._entity_cols.get(e, _NONE) for e in entities]
        # Popularity: the rows of each segment's most liked items, and overall.
        popular = dict(popular)
        overall = [self._row[i] for i in popular.pop((), ()) if i in self._row]
        self._overall_top = frozenset(overall[:top_n_overall])
        self._segments = {k: frozenset(self._row[i] for i in v if i in self._row) for k, v in popular.items()}
        self._vecs: np.ndarray | None = None  # the item vectors the centre below was taken from
        self._center = np.zeros(0, np.float32)
        self._unit: np.ndarray | None = None  # every row centred and unit, for catalogs up to UNIT_ROWS
        self._texts: dict[str, list] = {}  # stated taste -> [genres named, cosine mean, cosine deviation]
        self._profiles: dict[tuple[str, str, str], list[tuple[str, frozenset[int]]]] = {}
        self._profile_rows: dict[tuple[str, str, str], dict[int, str]] = {}  # row -> its finest segment's words

    # ------------------------------------------------------------ catalog changes
    def set_items(self, rows: Sequence[int], records: Sequence[Mapping[str, Any]], trained: Sequence[bool]) -> None:
        """Rows changed or appended (in order) by `Recommender.upsert_items`."""
        known = set(self._genre_matcher.names)
        for row, record, is_trained in zip(rows, records, trained):
            values = (
                display_title(record.get("title"), str(record["item_id"])),
                genre_set(record.get("genres")),
                bool(is_trained),
                self._entity_cols.get(str(record.get("entity_id") or ""), _NONE),
            )
            if row == len(self.titles):
                for column, value in zip((self.titles, self.genres, self.trained, self.entity_cols), values):
                    column.append(value)
            else:
                self.titles[row], self.genres[row], self.trained[row], self.entity_cols[row] = values
        if {g for r in rows for g in self.genres[r]} - known:
            self._genre_matcher = GenreMatcher(g for gs in self.genres for g in gs)
            self._texts.clear()

    # ------------------------------------------------------------ per request
    def taste_genres(self, text: str | None) -> dict[str, str]:
        """Genres (lower case) a stated taste names, each with the phrase as written, first named first;
        a genre named after a negation in the same clause ("not horror") is left out (`GenreMatcher`)."""
        return self._genre_matcher.find(text)

    def taste_z(self, taste: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        """Standard scores of items' text cosines with a sentence, against the whole catalog's."""
        mean, sd = self._taste_stats(taste)
        return (np.asarray(cosines, np.float64) - mean) / sd

    def _taste_stats(self, taste: np.ndarray) -> tuple[float, float]:
        taste = np.asarray(taste, np.float64)
        var = float(taste @ self._text_cov @ taste)
        return float(taste @ self._text_mean), max(float(np.sqrt(max(var, 0.0))), 1e-6)

    def _text(self, text: str, taste: np.ndarray | None) -> list:
        """[genres named, cosine mean, deviation] of a stated taste, remembered (the last `_CACHE` sentences)."""
        info = self._texts.get(text)
        if info is None:
            info = [self.taste_genres(text), None, None]
            _remember(self._texts, text, info)
        if taste is not None and info[1] is None:
            info[1], info[2] = self._taste_stats(taste)
        return info

    def segments(self, profile: Mapping[str, Any]) -> list[tuple[str, frozenset[int]]]:
        """(description, rows of its most liked items) of the profile's segments, finest first."""
        return self._segments_of(self._profile_key(profile))

    @staticmethod
    def _profile_key(profile: Mapping[str, Any]) -> tuple[str, str, str]:
        return str(profile.get("gender") or ""), age_band(profile.get("age")), str(profile.get("occupation") or "")

    def _segment_words(self, values: tuple[str, str, str]) -> dict[int, str]:
        """{row: description of the finest of the profile's segments among whose most liked items it is}."""
        words = self._profile_rows.get(values)
        if words is None:
            words = {row: w for w, rows in reversed(self._segments_of(values)) for row in rows}  # finest last: it wins
            _remember(self._profile_rows, values, words)
        return words

    def _segments_of(self, values: tuple[str, str, str]) -> list[tuple[str, frozenset[int]]]:
        found = self._profiles.get(values)
        if found is None:
            found = []
            for level in LEVELS:
                chosen = {a: v for a, v in zip(("gender", "age", "occupation"), values) if a in level}
                if any(v in ("", "unknown") for v in chosen.values()):
                    continue
                rows = self._segments.get(segment_key(chosen))
                if rows is None:
                    continue
                words = describe_segment(chosen)
                if words:
                    found.append((words, rows))
            _remember(self._profiles, values, found)
        return found

    def explain(
        self,
        query: Query,
        history: np.ndarray,
        ratings: np.ndarray,
        top: np.ndarray,
        vecs: np.ndarray,
        content: np.ndarray,
        taste: np.ndarray | None,
        named: Mapping[str, str] | None = None,
    ) -> list[str]:
        """One reason per row of ``top`` (catalog rows, best first): the first kind of the module's
        list that applies.

        history, ratings: the history rows the model pooled and their ratings (0: unknown);
        vecs (n_items, d): the model's item vectors (compared centred on the trained items' mean:
        raw vectors share a large common direction); content: the catalog's text ⊕ KG features,
        the text part unit rows (as `text.TextEncoder` makes them); taste: the stated taste's text
        vector (None without one); named: the genres the request asks for, each with the words that
        named it ("horror": "scary"; `intent.parse`), instead of the genres its text names literally.
        """
        self._sync(vecs)
        top_rows = top.tolist()
        is_liked = liked(ratings, self.threshold)
        cited = history[is_liked].tolist()
        kg: dict[int, tuple[int, str]] = {}
        best: list[int] = []
        best_sim: list[float] = []
        if cited:
            unit = self._unit_rows(top_rows + cited)
            sim = unit[: len(top_rows)] @ unit[len(top_rows) :].T  # (k, h) cosines
            best, best_sim = sim.argmax(1).tolist(), sim.max(1).tolist()
            kg = self._kg_matches(top_rows, cited, sim)
        genres, z, taste_reason = {}, None, ""
        if query.text:
            genres, mean, sd = self._text(query.text, taste)
            if named is not None:
                genres = dict(named)
            if taste is not None:
                z = ((content[top, : self.text_dim] @ taste - mean) / sd).tolist()
                taste_reason = f"matches '{quote(query.text)}'"
        segment_words = self._segment_words(self._profile_key(query.profile))
        fallback = FALLBACK[0 if any(query.profile.get(a) for a in ("age", "gender", "occupation")) else 1]
        reasons: list[str] = []
        titles, trained, overall, item_genres = self.titles, self.trained, self._overall_top, self.genres
        similar_min, related_min, taste_min = SIMILAR_MIN, RELATED_MIN, self.min_taste_z
        for i, row in enumerate(top_rows):
            if i in kg:
                j, relation = kg[i]
                reasons.append(PHRASES[relation].format(titles[cited[j]]))
                continue
            phrase = next((p for g, p in genres.items() if g in item_genres[row]), None) if genres else None
            if phrase:
                reasons.append(f"matches '{phrase}'")
            elif best and best_sim[i] >= similar_min:
                reasons.append(f"similar to {titles[cited[best[i]]]}")
            elif z is not None and z[i] >= taste_min:
                reasons.append(taste_reason)
            elif (words := segment_words.get(row)) is not None:
                reasons.append(f"popular with {words}")
            elif trained[row] and row in overall:
                reasons.append("popular overall")
            elif best and best_sim[i] >= related_min:
                reasons.append(
                    f"similar to {titles[cited[best[i]]]}"
                    if trained[row]
                    else f"new: similar content to {titles[cited[best[i]]]}"
                )
            else:
                reasons.append(fallback if trained[row] else NEW)
        return reasons

    def _sync(self, vecs: np.ndarray) -> None:
        """The centre of these item vectors (recomputed when the model's vectors change)."""
        if vecs is self._vecs:
            return
        trained = vecs[self._trained_rows]
        self._center = trained.mean(0).astype(np.float32) if len(trained) else np.zeros(vecs.shape[1], np.float32)
        self._vecs = vecs
        self._unit = self._centred(vecs) if len(vecs) <= UNIT_ROWS else None

    def _centred(self, rows: np.ndarray) -> np.ndarray:
        return _unit(np.asarray(rows, np.float32) - self._center)

    def _unit_rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Centred unit vectors of catalog rows (the same numbers whether kept or computed now)."""
        if self._unit is not None:
            return self._unit[rows]
        assert self._vecs is not None, "`_sync` sets the item vectors before any row is asked for"
        return self._centred(self._vecs[rows])

    def _kg_matches(self, top: list[int], cited: list[int], sim: np.ndarray) -> dict[int, tuple[int, str]]:
        """{top position: (history position, relation)} for the top items sharing a KG column with a
        history item whose vector is close enough (cosine >= `RELATED_MIN`): the strongest relation,
        then the closest history item, then the latest."""
        history = [self.entity_cols[r] for r in cited]
        pooled = _NONE.union(*history)
        if not pooled:
            return {}
        out: dict[int, tuple[int, str]] = {}
        for i, row in enumerate(top):
            common = self.entity_cols[row] & pooled
            if not common:
                continue
            choice = None
            for j, cols in enumerate(history):
                shared = common & cols
                if shared and cited[j] != row and sim[i, j] >= RELATED_MIN:
                    key = (min(shared) // self._stride, -float(sim[i, j]), -j)
                    choice = min(choice, key) if choice else key
            if choice:
                out[i] = (-choice[2], RELATIONS_BY_RANK[choice[0]])
        return out


_NONE: frozenset[int] = frozenset()
_CACHE = 4096  # stated tastes and profiles remembered


def _remember(cache: dict, key: Any, value: Any) -> None:
    if len(cache) >= _CACHE:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, np.float32)
    norms = np.sqrt(np.einsum("...i,...i->...", matrix, matrix))[..., None]
    return matrix / np.maximum(norms, 1e-12)
