"""Genres in words: a catalog's "|"-joined genre field, and the genres a stated taste names.

"I love sci-fi and old film noir, but not horror" names sci-fi and film-noir: a genre is matched
as people write it (any case, "-" or space or nothing between words, a plural, a few aliases), and
one named after a negation in the same clause is left out. `GenreMatcher.find` reads the text once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["GenreMatcher", "genre_pattern", "genre_set"]

GENRE_ALIASES = {
    "sci-fi": ("science fiction", "scifi"),
    "children's": ("kids", "children", "family"),
    "film-noir": ("noir",),
    "animation": ("animated", "cartoons?"),
    "romance": ("romantic",),
    "comedy": ("funny",),
}
_NEGATION = re.compile(r"\b(not|no|never|don'?t|doesn'?t|dislike|hate|except|without|nor)\b", re.I)
_CLAUSE = re.compile(r"[.;:!?]|\bbut\b|\bexcept\b", re.I)  # what ends a clause, and with it a negation's reach


def genre_set(genres: Any) -> frozenset[str]:
    """The lower-case genres of a "|"-joined catalog field."""
    return frozenset(g.lower() for g in str(genres or "").split("|") if g)


def genre_pattern(genre: str) -> str:
    """A genre as written by people: any case, "-" or space or nothing between words, a plural."""
    words = [re.escape(w) for w in re.split(r"[-\s]+", genre.lower()) if w]
    base = r"[-\s]?".join(words).replace("'", "'?")
    plural = base[:-1] + "(?:y|ies)" if base.endswith("y") else base + "(?:s|es)?"
    forms = [plural, *GENRE_ALIASES.get(genre.lower(), ())]
    return r"\b(?:" + "|".join(forms) + r")\b"


class GenreMatcher:
    """The genres of a vocabulary that free text names, negated ones left out."""

    def __init__(self, vocabulary: Iterable[str]):
        self.names = sorted(set(vocabulary))  # lower case, as `genre_set` gives them
        self._pattern = (
            re.compile("|".join(f"(?P<g{i}>{genre_pattern(g)})" for i, g in enumerate(self.names)), re.I)
            if self.names
            else None
        )

    def find(self, text: str | None) -> dict[str, str]:
        """Genres (lower case) ``text`` names, each with the phrase as written, first named first; a
        genre named after a negation in the same clause ("not horror") is left out.

        One pass: the clause ends and negations are found once over the whole text and walked in
        step with the genre matches, so the work is linear in the text's length. A negation counts
        for a genre when it lies wholly between the clause's start and the genre's start.
        """
        if not text or self._pattern is None:
            return {}
        clause_ends = iter([m.end() for m in _CLAUSE.finditer(text)] + [len(text) + 1])
        negations = iter([(m.start(), m.end()) for m in _NEGATION.finditer(text)] + [(len(text) + 1,) * 2])
        next_end, negation = next(clause_ends), next(negations)
        clause_start, last_negation = 0, -1  # the start of the latest negation wholly before the genre
        found: dict[str, str] = {}
        for match in self._pattern.finditer(text):
            start = match.start()
            while next_end <= start:
                clause_start, next_end = next_end, next(clause_ends)
            while negation[1] <= start:
                last_negation, negation = negation[0], next(negations)
            if last_negation >= clause_start:
                continue
            group = match.lastgroup
            assert group is not None  # every alternative of the pattern is a named group, g<i>
            found.setdefault(self.names[int(group[1:])], match.group(0))
        return found
