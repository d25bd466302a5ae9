"""A request's text as an `Intent`: hard constraints (genres, genres to avoid, years) and soft
preferences (reference items, free topic or mood), in the catalogue's own vocabulary.

"I love 90s romantic comedies, but no horror please" -> genres [[romance, comedy]], exclude [horror],
years (1990, 1999). Read in one pass per kind, each over the text with the parts already read blanked:
1. reference items: "like Toy Story", "similar to the godfather", "something like Jurrasic Park": the
   words after the cue, longest first, looked up among the titles (exact, then `difflib` at
   `FUZZY_MIN`; after a verb, "I like Heat", exact only);
2. periods: decades ("90s", "the eighties", "early 1980s"), ranges ("between 1980 and 1985", "before
   1970", "since 1990"), a year, and "recent"/"old" relative to the catalogue's latest year;
3. genres and their synonyms (`vocabulary.genre_phrases`); adjacent ones ("romantic comedy", "sci-fi
   thriller", "comedy with romance") are one group, all of whose genres an item must have; others
   are alternatives ("sci-fi or horror", "I like Sci-Fi and Horror movies.");
4. a genre or period is negated when a negation ("no", "don't want any", "anything but") stands before
   it with only `FILLER` words between, or it continues a negated list ("no horror, thrillers or war").
What no rule read, less `STOPWORDS`, is ``free_text``: a topic or mood for text similarity.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from recsys_tasks.explain.reasons import display_title
from recsys_tasks.intent.vocabulary import FILLER, LIST_JOINERS, NEGATION, STOPWORDS, Alternatives, genre_phrases

__all__ = ["Intent", "IntentParser", "Reference"]

FUZZY_MIN = 0.85  # difflib ratio a misspelt title needs ("jurrasic park" -> "jurassic park": 0.92)
MAX_TITLE_WORDS = 8  # words after a cue tried as a title
MAX_REFERENCES = 5  # reference items read from one text
MAX_FUZZY_CUES = 3  # cues whose words are looked up with difflib (each tries up to MAX_TITLE_WORDS prefixes)
MAX_NEGATED_WORDS = 16  # tokens after a negation walked for what it negates
MAX_GROUPS = 16  # alternatives adjacent genre words may combine into ("kids kids kids ...": not 2^n)
RECENT_YEARS = 5  # "recent": the catalogue's last five years
MAX_FREE_WORDS = 32  # words of free text kept for the text similarity
OLD_YEARS = 30  # "old", "classic": thirty years or more before the catalogue's latest

Years = tuple[int | None, int | None]


@dataclass(frozen=True)
class Reference:
    """An item a request names as a model ("like Toy Story"): its id, title and the words that named it."""

    item_id: str
    title: str
    phrase: str


@dataclass
class Intent:
    """What a request's text asks for (see the module). ``genres``: alternatives, each a group of genres
    an item must all have; ``years``: (first, last), either open (None); ``phrases``: genre -> the words
    that named it (for the reasons)."""

    genres: list[tuple[str, ...]] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    years: Years | None = None
    like: list[Reference] = field(default_factory=list)
    free_text: str = ""
    relaxed: list[str] = field(default_factory=list)
    phrases: dict[str, str] = field(default_factory=dict)
    taste: bool = False  # the text only lists liked genres ("I like Sci-Fi and Horror movies."): no period,
    # exclusion, reference or genres that go together ("I love 90s romantic comedies" is a request)

    @property
    def hard(self) -> bool:
        """Whether it constrains which items may be recommended."""
        return bool(self.genres or self.exclude or self.years)

    @property
    def empty(self) -> bool:
        return not (self.hard or self.like or self.free_text)

    def to_dict(self) -> dict[str, Any]:
        """The parse as a response shows it."""
        return {
            "genres": [list(g) for g in self.genres],
            "exclude": list(self.exclude),
            "years": list(self.years) if self.years else None,
            "like": [{"item_id": r.item_id, "title": r.title} for r in self.like],
            "free_text": self.free_text,
            "relaxed": list(self.relaxed),
            "taste": self.taste,
        }


# ------------------------------------------------------------------ periods
_DECADE_WORDS = {
    w: 10 * (i + 2)
    for i, w in enumerate("twenties thirties forties fifties sixties seventies eighties nineties".split())
}
_MOD = r"(?:(?P<mod>early|late|mid)[-\s]?)?"
_DECADE = (
    r"(?:the\s+)?"
    + _MOD
    + r"(?:(?P<full>1[89]\d0|20[0-2]0)'?s|['’]?(?P<short>\d0)'?s|(?P<word>"
    + "|".join(_DECADE_WORDS)
    + r"))"
)
_YEAR = r"(?P<year>1[89]\d\d|20[0-2]\d)"
_CUE_BEFORE = r"(?P<before>before|pre-?|prior\s+to|earlier\s+than|older\s+than|until|up\s+to|through|till)"
_CUE_AFTER = r"(?P<after>after|post-?|later\s+than|newer\s+than|since)"


def _years_of(m: re.Match) -> tuple[int, int]:
    """(first, last) year of a decade or year match."""
    groups = m.groupdict()
    if groups.get("year"):
        y = int(groups["year"])
        return y, y
    if groups.get("full"):
        start = int(groups["full"])
    elif groups.get("short"):
        d = int(groups["short"])
        start = (2000 if d < 20 else 1900) + d  # "10s" 2010s, "20s" 1920s
    else:
        start = 1900 + _DECADE_WORDS[groups["word"].lower()]
    mod = (groups.get("mod") or "").lower()
    if mod == "early":
        return start, start + 4
    if mod == "late":
        return start + 5, start + 9
    if mod == "mid":
        return start + 3, start + 7
    return start, start + 9


class _Periods:
    """The periods a text names, each (start, end, (first, last))."""

    def __init__(self, latest: int | None):
        self.latest = latest
        either = rf"(?:{_DECADE}|{_YEAR})"
        self.range = re.compile(
            r"\b(?:between|from)\s+(?P<a>1[89]\d\d|20[0-2]\d)\s*(?:and|to|until|till|through|-|–)\s*"
            r"(?P<b>1[89]\d\d|20[0-2]\d)\b|\b(?P<c>1[89]\d\d|20[0-2]\d)\s*(?:-|–|to)\s*(?P<d>1[89]\d\d|20[0-2]\d)\b",
            re.I,
        )
        self.bound = re.compile(rf"\b(?:{_CUE_BEFORE}|{_CUE_AFTER})\s*{either}(?![\w'])", re.I)
        self.point = re.compile(
            rf"(?<![\w'])(?<!my\s)(?<!our\s)(?<!their\s)(?<!his\s)(?<!her\s){either}(?![\w'])", re.I
        )
        self.recent = re.compile(
            r"\b(?:recent(?:ly)?|latest|newest|new\s+releases?|brand[-\s]new|modern|current|last\s+few\s+years)\b", re.I
        )
        self.old = re.compile(
            r"\b(?:old|older|oldies|classics?|vintage|golden[-\s]age|black[-\s]and[-\s]white)\b", re.I
        )

    def find(self, text: str) -> list[tuple[int, int, Years]]:
        out: list[tuple[int, int, Years]] = []
        taken: list[tuple[int, int]] = []

        def add(start: int, end: int, years: Years) -> None:
            if not any(start < e and s < end for s, e in taken):
                taken.append((start, end))
                out.append((start, end, years))

        for m in self.range.finditer(text):
            a, b = (int(m["a"]), int(m["b"])) if m["a"] else (int(m["c"]), int(m["d"]))
            add(m.start(), m.end(), (min(a, b), max(a, b)))
        for m in self.bound.finditer(text):
            first, last = _years_of(m)
            cue = (m["before"] or m["after"]).lower()
            if m["before"]:
                add(m.start(), m.end(), (None, last if cue in ("until", "up to", "through", "till") else first - 1))
            else:
                add(m.start(), m.end(), (first if cue == "since" else last + 1, None))
        for m in self.point.finditer(text):
            add(m.start(), m.end(), _years_of(m))
        if self.latest is not None:
            for m in self.recent.finditer(text):
                add(m.start(), m.end(), (self.latest - RECENT_YEARS + 1, self.latest))
            for m in self.old.finditer(text):
                add(m.start(), m.end(), (None, self.latest - OLD_YEARS + 1))
        return sorted(out)


def _complement(years: Years, latest: int | None) -> Years:
    """A negated period as one interval: before it, or after it where it starts in the first half up
    to the catalogue's latest year ("not from the 90s" -> before 1990, "nothing before 1980" -> 1980 on)."""
    first, last = years
    if first is None:
        return (last + 1 if last is not None else None), None
    if last is None:
        return None, first - 1
    return (None, first - 1) if latest is None or last >= latest - 15 else (last + 1, None)


def _intersect(a: Years | None, b: Years) -> Years:
    if a is None:
        return b
    first = max((y for y in (a[0], b[0]) if y is not None), default=None)
    last = min((y for y in (a[1], b[1]) if y is not None), default=None)
    return first, last


# ------------------------------------------------------------------ titles
_REFERENCE = re.compile(
    r"\b(?:(?P<verb>(?:i|we|you|they|kids|also|really|would|i'd|we'd|do|does|did|just|always|usually|both)\s+)?like"
    r"|similar\s+to|in\s+the\s+(?:vein|style|spirit)\s+of|reminds?\s+me\s+of|along\s+the\s+lines\s+of|akin\s+to"
    r"|comparable\s+to|the\s+same\s+as|as\s+good\s+as|resembling|such\s+as)\s+",
    re.I,
)
_WORD = re.compile(r"[^\s,;!?()\[\]{}\"]+")  # "." stays in a word ("G.I. Jane"): the longest title read wins
_ARTICLES = ("the ", "a ", "an ")


def _norm(text: str) -> str:
    """Lower case, letters and digits only, one space between words."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower().replace("'", "")).split())


class _Titles:
    """Title -> catalogue row: every title's forms (as given, "The X" for "X, The", without the article,
    the part before a ":", each part in brackets); a form shared by several items is the row whose
    whole title it is, else the first row."""

    def __init__(self, titles: Sequence[str]):
        self.titles = [display_title(t) if str(t or "").strip() else "" for t in titles]
        forms: dict[str, tuple[int, int]] = {}  # form -> (rank: 0 whole title, 1 derived; row)
        for row, raw in enumerate(titles):
            raw = str(raw or "").strip()
            if not raw:
                continue
            main = re.sub(r"\s*\([^)]*\)", "", raw).strip()  # "Seven (Se7en)" -> "Seven"
            shown = display_title(main)
            whole = [raw, main, shown]
            derived = [p for p in re.findall(r"\(([^)]*)\)", raw)]
            for form in (shown, main):
                lower = form.lower()
                for article in _ARTICLES:
                    if lower.startswith(article):
                        derived.append(form[len(article) :])
                if ":" in form:
                    derived.append(form.split(":", 1)[0])
            for rank, group in ((0, whole), (1, derived)):
                for form in group:
                    key = _norm(form)
                    if key and (key not in forms or (rank, row) < forms[key]):
                        forms[key] = (rank, row)
        self.forms = {k: row for k, (_, row) in forms.items()}
        self._keys = list(self.forms)

    def lookup(self, words: Sequence[str], fuzzy: bool) -> tuple[int, int] | None:
        """(catalogue row, words used) of the longest run of ``words`` from the first that names a title."""
        for n in range(min(len(words), MAX_TITLE_WORDS), 0, -1):
            row = self.forms.get(_norm(" ".join(words[:n])))
            if row is not None:
                return row, n
        if fuzzy:
            for n in range(min(len(words), MAX_TITLE_WORDS), 0, -1):
                key = _norm(" ".join(words[:n]))
                if len(key) < 4:
                    continue
                close = difflib.get_close_matches(key, self._keys, n=1, cutoff=FUZZY_MIN)
                if close:
                    return self.forms[close[0]], n
        return None


# ------------------------------------------------------------------ the parser
class IntentParser:
    """Reads requests' text against one catalogue: its genres, titles and latest year."""

    def __init__(self, item_ids: Sequence[str], titles: Sequence[Any], genres: Sequence[str], latest: int | None):
        """``genres``: the catalogue's genre vocabulary (lower case); ``latest``: its latest release year
        (None: "recent" and "old" mean nothing)."""
        self.item_ids = [str(i) for i in item_ids]
        self.titles = _Titles([str(t) if t is not None else "" for t in titles])
        self.periods = _Periods(latest)
        self.latest = latest
        phrases = genre_phrases(genres)
        self._alternatives: list[Alternatives] = [alt for _, alt in phrases]
        self._genres = (
            re.compile("|".join(f"(?P<g{i}>{p})" for i, (p, _) in enumerate(phrases)), re.I) if phrases else None
        )

    def parse(self, text: str | None) -> Intent:
        """The `Intent` of ``text`` (an empty one for none)."""
        if not text or not text.strip():
            return Intent()
        chars = list(text)  # the text with what was read blanked
        consumed = [False] * len(text)

        def blank(start: int, end: int) -> None:
            chars[start:end] = [" "] * (end - start)
            consumed[start:end] = [True] * (end - start)

        negations = [(m.start(), m.end()) for m in NEGATION.finditer(text)]
        like = self._references(text, negations, blank)
        mentions: list[tuple[int, int, str, Any]] = []  # (start, end, kind, value): kind genre or period
        for start, end, years in self.periods.find("".join(chars)):
            mentions.append((start, end, "period", years))
            blank(start, end)
        if self._genres is not None:
            for m in self._genres.finditer("".join(chars)):
                assert m.lastgroup is not None
                mentions.append((m.start(), m.end(), "genre", self._alternatives[int(m.lastgroup[1:])]))
        for start, end in negations:
            consumed[start:end] = [True] * (end - start)
            for a, b in _negated_words(text, end):  # what it negates is no topic: "not horror" asks for none
                consumed[a:b] = [True] * (b - a)
        mentions.sort()
        negated = _negated(text, [(s, e) for s, e, _, _ in mentions], negations)
        intent = Intent(like=like)
        positive: list[tuple[int, int, Alternatives]] = []
        avoid: list[str] = []
        for (start, end, kind, value), neg in zip(mentions, negated):
            consumed[start:end] = [True] * (end - start)
            if kind == "period":
                intent.years = _intersect(intent.years, _complement(value, self.latest) if neg else value)
            elif neg:
                avoid += [g for group in value for g in group]
            else:
                positive.append((start, end, value))
                for group in value:
                    for g in group:
                        intent.phrases.setdefault(g, text[start:end].strip())
        groups, avoided = _groups(text, positive), set(avoid)
        kept = [g for g in groups if not avoided & set(g)]  # "kids movies without cartoons": children's, not animation
        if kept or not groups:
            intent.genres, intent.exclude = kept, list(dict.fromkeys(avoid))
        else:  # "nothing violent, a thriller": what is named outright wins over what a word implies
            named = {g for group in groups for g in group}
            intent.genres, intent.exclude = groups, list(dict.fromkeys(g for g in avoid if g not in named))
        stated = _Stated(text)
        intent.taste = (  # a bare list of liked genres: a taste, not tonight's request (see `Intent.taste`)
            bool(positive)
            and all(stated(start) for start, _, _ in positive)
            and all(len(g) == 1 for g in intent.genres)
            and not (intent.years or intent.exclude or intent.like)
        )
        words = re.findall(r"[a-z][a-z']+", "".join(" " if c else ch for ch, c in zip(text.lower(), consumed)))
        intent.free_text = " ".join([w for w in words if w.strip("'") not in STOPWORDS and len(w) > 2][:MAX_FREE_WORDS])
        return intent

    def _references(self, text: str, negations: list[tuple[int, int]], blank) -> list[Reference]:
        """The items ``text`` names as models, their words blanked; one after a negation is left out."""
        found: dict[str, Reference] = {}
        ends = [e for _, e in negations]
        fuzzy_left = MAX_FUZZY_CUES
        for cue in _REFERENCE.finditer(text):
            if len(found) >= MAX_REFERENCES:
                break
            words = [
                (m.group(0), m.start(), m.end())
                for m in itertools.islice(_WORD.finditer(text, cue.end()), MAX_TITLE_WORDS)
            ]
            stop = next(
                (i for i, (_, s, _) in enumerate(words) if re.search(r"[,;!?()\[\]]", text[cue.end() : s])), None
            )
            words = words[:stop] if stop is not None else words
            fuzzy = cue["verb"] is None and fuzzy_left > 0
            fuzzy_left -= fuzzy
            hit = self.titles.lookup([w for w, _, _ in words], fuzzy=fuzzy)
            if hit is None:
                continue
            row, n = hit
            end = words[n - 1][2]
            negated = _reached(text, cue.start(), ends)
            blank(cue.start(), end)
            if not negated:
                item = self.item_ids[row]
                found.setdefault(item, Reference(item, self.titles.titles[row], text[cue.end() : end]))
        return list(found.values())


_TASTE = re.compile(
    r"\b(?:i|we)\s+(?:really\s+|also\s+|just\s+|do\s+|mostly\s+|usually\s+)?(?:like|love|enjoy|prefer|adore)\b"
    r"|\bi'?m\s+(?:really\s+|a\s+)?(?:into|fan\s+of)\b|\bmy\s+favou?rites?\b",
    re.I,
)
_CLAUSE_END = re.compile(r"[.;!?]|\bbut\b", re.I)


class _Stated:
    """Whether a taste verb ("I like", "I love", "I'm into") governs the words at a place: one before it
    in the same clause (the verbs and clause ends found once)."""

    def __init__(self, text: str):
        self.verbs = [m.start() for m in _TASTE.finditer(text)]
        self.clause_ends = [m.end() for m in _CLAUSE_END.finditer(text)]

    def __call__(self, start: int) -> bool:
        at = bisect.bisect_right(self.clause_ends, start) - 1
        clause_start = self.clause_ends[at] if at >= 0 else 0
        verb = bisect.bisect_left(self.verbs, clause_start)
        return verb < len(self.verbs) and self.verbs[verb] < start


def _negated_words(text: str, end: int) -> list[tuple[int, int]]:
    """Spans of the words a negation ending at ``end`` reaches: fillers up to a word, and the words a
    list joins to it ("nothing about zombies or vampires")."""
    out: list[tuple[int, int]] = []
    state = "before"  # before the first word | after a word | after a list joiner
    for m in itertools.islice(_TOKEN.finditer(text, end), MAX_NEGATED_WORDS):
        token, span = m.group(0).lower(), (m.start(), m.end())
        is_word = re.match(r"\w", token) is not None
        if state == "after":
            if token not in LIST_JOINERS:
                break
            state = "joined"
        elif state == "before" and (token in FILLER or token in STOPWORDS):
            out.append(span)
        elif state == "joined" and (token in LIST_JOINERS or token in FILLER):
            continue
        elif is_word:
            out.append(span)
            state = "after"
        else:
            break
    return out


_TOKEN = re.compile(r"[\w']+|[^\w\s]")


def _only(text: str, start: int, end: int, allowed: frozenset[str]) -> bool:
    """Whether ``text[start:end]`` holds only ``allowed`` words (and spaces); stops at the first other."""
    return all(m.group(0).lower() in allowed for m in _TOKEN.finditer(text, start, end))


def _reached(text: str, start: int, ends: list[int]) -> bool:
    """Whether the nearest negation ending (``ends``, ascending) at or before ``start`` reaches it over
    `FILLER` words; a farther one never does (the nearer negation's words stand between)."""
    at = bisect.bisect_right(ends, start) - 1
    return at >= 0 and _only(text, ends[at], start, FILLER)


def _negated(text: str, spans: list[tuple[int, int]], negations: list[tuple[int, int]]) -> list[bool]:
    """Per mention span, whether a negation reaches it (see the module)."""
    ends = sorted(e for _, e in negations)
    out: list[bool] = []
    for i, (start, _) in enumerate(spans):
        direct = _reached(text, start, ends)
        chained = i > 0 and out[i - 1] and _only(text, spans[i - 1][1], start, LIST_JOINERS)
        out.append(direct or chained)
    return out


_AND_GAP = frozenset(
    "with about set during in a an the".split()
)  # "comedy with romance", "love story set during a war"


def _groups(text: str, mentions: list[tuple[int, int, Alternatives]]) -> list[tuple[str, ...]]:
    """Alternatives of genre groups: adjacent mentions ("romantic comedy") combine, all their genres at once."""
    merged: list[Alternatives] = []
    previous_end = None
    for start, end, alternatives in mentions:
        gap = text[previous_end:start] if previous_end is not None else None
        joined = gap is not None and (
            re.fullmatch(r"[\s-]*", gap) is not None
            or (_only(gap, 0, len(gap), _AND_GAP) and re.search(r"\w", gap) is not None)
        )
        if merged and joined:
            combined: dict[frozenset[str], tuple[str, ...]] = {}  # one group per set of genres, first named first
            for a, b in itertools.product(merged[-1], alternatives):
                group = tuple(dict.fromkeys(a + b))
                combined.setdefault(frozenset(group), group)
            merged[-1] = tuple(combined.values())[:MAX_GROUPS]
        else:
            merged.append(alternatives)
        previous_end = end
    return list(dict.fromkeys(group for alternatives in merged for group in alternatives))
