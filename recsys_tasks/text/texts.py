"""The sentences the encoder reads: an item's text, a profile's, the protocol's stated taste.

Pure string building (no model): serving, training and evaluation all phrase text the same way.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from recsys_tasks.data.dataset import Dataset, age_band


def item_text(item: dict) -> str:
    """ "Toy Story (1995). Genres: Animation, Children's, Comedy. <description>"."""
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
    """ "A 25-34 year old female programmer." from whatever demographics are known."""
    gender = {"M": "male", "F": "female"}.get(str(profile.get("gender") or "").upper(), "")
    band = age_band(profile.get("age"))
    age = {"unknown": "", "under 18": "teenage"}.get(band, f"{band} year old")
    occupation = str(profile.get("occupation") or "person").replace("none", "person")
    return f"A {' '.join(w for w in (age, gender, occupation) if w)}."


def taste_sentence(genres: Sequence[str]) -> str:
    """The protocol's stated-taste sentence: "I like G1 and G2 movies."."""
    return f"I like {' and '.join(genres)} movies."


def stated_taste(genres: Sequence[list[str]]) -> str | None:
    """The sentence "I like G1 and G2 movies." from the genre lists of a user's positives.

    Most frequent genres first, ties by name; one genre if only one occurs, None if none does.
    """
    counts = Counter(g for item_genres in genres for g in item_genres if g)
    top = [g for g, _ in sorted(counts.items(), key=lambda gc: (-gc[1], gc[0]))[:2]]
    return taste_sentence(top) if top else None


def taste_sentences(genre_vocab: Sequence[str]) -> list[str]:
    """Every one- and two-genre taste sentence, so training can simulate stated taste."""
    vocab = sorted(genre_vocab)
    return [taste_sentence([g]) for g in vocab] + [taste_sentence(list(p)) for p in itertools.combinations(vocab, 2)]


def snapshot_texts(dataset: Dataset) -> dict[str, list[str]]:
    """What text_embed encodes for a snapshot, rows aligned with its tables: ``items`` (one per item row), ``users``
    (one profile per user row) and ``tastes`` (every taste sentence over its genres)."""
    vocab = sorted({g for gs in dataset.genre_lists() for g in gs})
    return {
        "items": [item_text(r) for r in dataset.items.to_dict("records")],
        "users": [profile_text(r) for r in dataset.users.to_dict("records")],
        "tastes": taste_sentences(vocab),
    }


def distinct_texts(texts: dict[str, list[str]]) -> list[str]:
    """Every text of ``texts`` once, in first-seen order (profile texts repeat: each is encoded once)."""
    return list(dict.fromkeys(itertools.chain.from_iterable(texts.values())))
