"""A request's text as constraints (`recsys_tasks.intent`): known answers of the parser on a small
catalogue written here, the tiers and relaxation, and the path through `Recommender` on the session's
tiny bundle (items "Movie i" of 1980 + i, genres among Action, Comedy, Drama, Sci-Fi)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.intent.gate import NEVER, CatalogFacts, rank_scores, tiers
from recsys_tasks.intent.parse import Intent
from recsys_tasks.intent.reader import IntentReader
from recsys_tasks.limits import MAX_TEXT

# item_id, title (MovieLens' forms), year, genres
CATALOG = pd.DataFrame(
    [
        ("1", "Toy Story", 1995, "Animation|Children's|Comedy"),
        ("2", "Alien", 1979, "Action|Horror|Sci-Fi|Thriller"),
        ("3", "Aliens", 1986, "Action|Sci-Fi|Thriller|War"),
        ("4", "Alien: Resurrection", 1997, "Action|Horror|Sci-Fi"),
        ("5", "Godfather, The", 1972, "Action|Crime|Drama"),
        ("6", "Seven (Se7en)", 1995, "Crime|Thriller"),
        ("7", "Jurassic Park", 1993, "Action|Adventure|Sci-Fi"),
        ("8", "G.I. Jane", 1997, "Action|Drama|War"),
        ("9", "When Harry Met Sally...", 1989, "Comedy|Romance"),
        ("10", "Shining, The", 1980, "Horror"),
        ("11", "Casablanca", 1942, "Drama|Romance|War"),
        ("12", "Hoop Dreams", 1994, "Documentary"),
        ("13", "Terminator 2: Judgment Day", 1991, "Action|Sci-Fi|Thriller"),
        ("14", "Unforgiven", 1992, "Western"),
        ("15", "Singin' in the Rain", 1952, "Musical|Romance"),
        ("16", "Fargo", 1996, "Crime|Drama|Thriller"),
        ("17", "Maltese Falcon, The", 1941, "Film-Noir|Mystery"),
        ("18", "Aladdin", 1992, "Animation|Children's|Comedy|Musical"),
        ("19", "Babe", 1995, "Children's|Comedy|Drama"),
        ("20", "Sleepless in Seattle", 1993, "Comedy|Romance"),
    ],
    columns=["item_id", "title", "year", "genres"],
)


@pytest.fixture(scope="module")
def reader() -> IntentReader:
    return IntentReader(CATALOG)


def parse(reader: IntentReader, text: str) -> Intent:
    return reader.parse(text)


def genres(intent: Intent) -> set[frozenset[str]]:
    return {frozenset(g) for g in intent.genres}


# ---------------------------------------------------------------- genres and their synonyms
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("documentaries", {frozenset({"documentary"})}),
        ("something scary", {frozenset({"horror"})}),
        ("a hilarious film", {frozenset({"comedy"})}),
        ("a romcom", {frozenset({"romance", "comedy"})}),
        ("romantic comedies", {frozenset({"romance", "comedy"})}),
        ("films for my kids", {frozenset({"children's"}), frozenset({"animation"})}),
        ("sci-fi", {frozenset({"sci-fi"})}),
        ("science fiction", {frozenset({"sci-fi"})}),
        ("cowboy movies", {frozenset({"western"})}),
        ("a whodunit", {frozenset({"mystery"})}),
        ("gangster films", {frozenset({"crime"})}),
        ("film noir", {frozenset({"film-noir"})}),
        ("sci-fi or horror", {frozenset({"sci-fi"}), frozenset({"horror"})}),
        ("a comedy with romance", {frozenset({"comedy", "romance"})}),
    ],
)
def test_genres_and_their_synonyms(reader: IntentReader, text: str, expected: set[frozenset[str]]) -> None:
    intent = parse(reader, text)
    assert genres(intent) == expected and intent.exclude == [] and intent.years is None


def test_a_synonym_whose_genre_the_catalogue_lacks_reads_as_nothing() -> None:
    lacking = IntentReader(CATALOG[~CATALOG["genres"].str.contains("Western")])
    assert lacking.parse("cowboy movies").genres == [] and lacking.parse("cowboy movies").free_text == "cowboy"


def test_a_protocol_taste_sentence_names_its_genres_as_a_stated_taste(reader: IntentReader) -> None:
    intent = parse(reader, "I like Children's and Film-Noir movies.")
    assert genres(intent) == {frozenset({"children's"}), frozenset({"film-noir"})}
    assert intent.taste and intent.like == [] and intent.free_text == ""
    assert not parse(reader, "children's movies").taste
    assert not parse(reader, "I love 90s romantic comedies, but no horror please").taste  # a request
    assert not parse(reader, "I like comedies, no romance").taste


# ---------------------------------------------------------------- periods
@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("movies from the 90s", (1990, 1999)),
        ("the eighties", (1980, 1989)),
        ("a 1970s film", (1970, 1979)),
        ("early 90s", (1990, 1994)),
        ("late 80s", (1985, 1989)),
        ("before 1970", (None, 1969)),
        ("after 1990", (1991, None)),
        ("since 1990", (1990, None)),
        ("between 1980 and 1985", (1980, 1985)),
        ("from 1995", (1995, 1995)),
        ("something recent", (1993, 1997)),  # the catalogue's last five years (latest 1997)
        ("an old film", (None, 1968)),  # thirty years or more before its latest
        ("not from the 90s", (None, 1989)),
        ("nothing before 1980", (1980, None)),
        ("nothing too recent", (None, 1992)),
    ],
)
def test_periods(reader: IntentReader, text: str, years: tuple) -> None:
    assert parse(reader, text).years == years


def test_an_age_is_no_decade(reader: IntentReader) -> None:
    assert parse(reader, "something for people in my 30s").years is None


# ---------------------------------------------------------------- negation
@pytest.mark.parametrize(
    ("text", "positive", "exclude"),
    [
        ("no horror", set(), {"horror"}),
        ("I hate comedy", set(), {"comedy"}),
        ("anything but drama", set(), {"drama"}),
        ("nothing violent", set(), {"action", "crime", "horror", "war", "thriller"}),
        ("I don't want any war movies or westerns", set(), {"war", "western"}),
        ("no horror, no thrillers, just a nice drama", {frozenset({"drama"})}, {"horror", "thriller"}),
        ("thrillers, but not crime", {frozenset({"thriller"})}, {"crime"}),
        ("kids movies without cartoons", {frozenset({"children's"})}, {"animation"}),
        ("nothing scary for a date night", {frozenset({"romance"})}, {"horror"}),
        ("I love 90s romantic comedies, but no horror please", {frozenset({"romance", "comedy"})}, {"horror"}),
    ],
)
def test_negation(reader: IntentReader, text: str, positive: set, exclude: set) -> None:
    intent = parse(reader, text)
    assert genres(intent) == positive and set(intent.exclude) == exclude


def test_a_genre_named_outright_wins_over_one_a_word_excludes(reader: IntentReader) -> None:
    intent = parse(reader, "nothing violent, a thriller")
    assert genres(intent) == {frozenset({"thriller"})} and "thriller" not in intent.exclude
    assert {"horror", "war"} <= set(intent.exclude)


# ---------------------------------------------------------------- reference items
@pytest.mark.parametrize(
    ("text", "item_id"),
    [
        ("something like Toy Story", "1"),
        ("something like Alien", "2"),  # the whole title, not Aliens or Alien: Resurrection
        ("similar to the godfather", "5"),  # "Godfather, The", any case
        ("like Se7en", "6"),  # a title's part in brackets
        ("like Terminator 2", "13"),  # the part before the colon
        ("I want something like Jurrasic Park", "7"),  # misspelt
        ("movies similar to G.I. Jane", "8"),
        ("in the vein of When Harry Met Sally, but newer", "9"),
    ],
)
def test_reference_titles(reader: IntentReader, text: str, item_id: str) -> None:
    intent = parse(reader, text)
    assert [r.item_id for r in intent.like] == [item_id]
    assert intent.genres == [] and intent.free_text == ""


def test_a_reference_title_is_not_read_for_genres_and_a_verb_like_needs_an_exact_title(reader: IntentReader) -> None:
    assert parse(reader, "something like Alien").genres == []  # "Alien" is no sci-fi constraint here
    assert [r.item_id for r in parse(reader, "I like Fargo").like] == ["16"]
    assert parse(reader, "I like Fargoo").like == []  # after a verb, no fuzzy match
    assert parse(reader, "I like comedies").like == [] and genres(parse(reader, "I like comedies")) == {
        frozenset({"comedy"})
    }
    assert parse(reader, "nothing like Toy Story").like == []  # negated: no model to follow


def test_free_text_is_what_no_rule_read(reader: IntentReader) -> None:
    assert parse(reader, "a film about a boxer in prison").free_text == "boxer prison"
    assert parse(reader, "scary movies from the eighties").free_text == ""
    negated = parse(reader, "about boxers, but nothing about zombies or vampires tonight")
    assert negated.free_text == "boxers" and negated.exclude == ["horror"]


# ---------------------------------------------------------------- hostile input
@pytest.mark.parametrize(
    "text",
    [
        "comedy.*+? (from) [the] 80s\\ $^|{2}",
        "(?P<g0>horror)|" * 50,
        "like ((((((((((",
        "\x00\u202e🎬 ñandú horror",
        "   ",
        "",
    ],
)
def test_hostile_text_is_read_as_text(reader: IntentReader, text: str) -> None:
    intent = parse(reader, text)
    assert isinstance(intent, Intent)
    if "comedy" in text:
        assert genres(intent) == {frozenset({"comedy"})} and intent.years == (1980, 1989)


@pytest.mark.parametrize(
    "text",
    ["violent " * 1200, "kids " * 2000, "like " * 2000, "something like Jurrasic Park " * 300, "no horror, " * 900],
)
def test_repetitive_text_gives_a_bounded_parse(reader: IntentReader, text: str) -> None:
    from recsys_tasks.intent.parse import MAX_GROUPS, MAX_REFERENCES

    intent = parse(reader, text[:MAX_TEXT])
    assert len(intent.genres) <= MAX_GROUPS and len(intent.like) <= MAX_REFERENCES
    assert len(intent.free_text.split()) <= 32


def test_the_longest_text_a_request_may_hold_is_parsed(reader: IntentReader) -> None:
    text = ("no horror " + "a " * 100 + "like Toy Story ") * (MAX_TEXT // 225)
    assert len(text) <= MAX_TEXT
    intent = parse(reader, text)
    assert intent.exclude == ["horror"] and [r.item_id for r in intent.like] == ["1"]
    assert len(intent.free_text.split()) <= 32


# ---------------------------------------------------------------- tiers and relaxation
def test_tiers_gate_and_relax_years_first_then_genres_beyond_the_first(reader: IntentReader) -> None:
    facts = CatalogFacts(CATALOG["genres"], CATALOG["year"])
    intent = reader.parse("sci-fi thrillers from the 1930s, no horror")
    assert genres(intent) == {frozenset({"sci-fi", "thriller"})} and intent.years == (1930, 1939)
    found = tiers(intent, facts)
    rows = {i: r for r, i in enumerate(CATALOG["item_id"])}
    assert found.steps == ["years 1930-1939", "genres beyond 'sci-fi'", "genres"]
    assert not (found.tier == 0).any()  # nothing of the 1930s
    assert found.tier[rows["3"]] == found.tier[rows["13"]] == 1  # sci-fi thrillers, years relaxed
    assert found.tier[rows["7"]] == 2  # sci-fi only
    assert found.tier[rows["16"]] == 3  # neither
    assert found.tier[rows["2"]] == found.tier[rows["4"]] == found.tier[rows["10"]] == NEVER  # horror
    assert found.relaxed(np.array([rows["3"], rows["7"]])) == [
        "years 1930-1939 relaxed: 0 item(s) fit",
        "genres beyond 'sci-fi' relaxed: 2 item(s) fit",
    ]
    assert found.relaxed(np.array([rows["3"]])) == ["years 1930-1939 relaxed: 0 item(s) fit"]


def test_rank_scores_order_by_tier_then_score() -> None:
    scores = np.array([5.0, 1.0, 3.0, 9.0, -2.0], np.float32)
    tier = np.array([1, 0, 0, NEVER, 2], np.int16)
    ranked = rank_scores(scores, tier)
    assert np.argsort(-ranked, kind="stable").tolist() == [2, 1, 0, 4, 3]


# ---------------------------------------------------------------- through the recommender
@pytest.fixture(scope="module")
def rec(tiny_bundle):
    from recsys_tasks.model.recommender import Recommender

    return Recommender.load(Path(tiny_bundle.path("bundle")))


class _ExactIndex:
    """`index.ItemIndex`'s contract without FAISS: the top n rows by u·v + b."""

    def __init__(self, rec):
        self.rows = rec.indexed_rows()
        self.vecs, self.bias = rec.index_arrays(self.rows)

    def search(self, users: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        scores = users @ self.vecs.T + self.bias
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        return np.take_along_axis(scores, order, 1), self.rows[order]


# The tiny catalogue: Action 4, 8, 12; Comedy|Sci-Fi 1, 3, 5, 7, 9, 11, 13, 15; Drama 2, 6, 10, 14; item i of 1980 + i.
@pytest.mark.slow
def test_recommend_keeps_to_the_constraints_fills_from_the_relaxed_and_shows_the_parse(rec) -> None:
    [response] = rec.recommend([{"request_id": "r", "text": "action movies from before 1990, no comedy", "k": 10}])
    assert response["intent"] == {
        "genres": [["action"]],
        "exclude": ["comedy"],
        "years": [None, 1989],
        "like": [],
        "free_text": "",
        "relaxed": ["years up to 1989 relaxed: 2 item(s) fit", "genres relaxed: 3 item(s) fit"],
        "taste": False,
    }
    items = response["items"]
    assert {i["item_id"] for i in items[:2]} == {"4", "8"} and items[2]["item_id"] == "12"  # fits, then years relaxed
    assert {i["item_id"] for i in items[3:]} == {"2", "6", "10", "14"}  # then genres relaxed; comedy never
    assert [i["reason"] for i in items[:3]] == ["matches 'action'"] * 3
    catalog = rec.bundle.catalog.set_index("item_id")
    for item in items:
        row = catalog.loc[item["item_id"]]
        assert (item["title"], item["year"], item["genres"]) == (row["title"], row["year"], row["genres"].split("|"))


@pytest.mark.slow
def test_where_nothing_fits_the_years_are_relaxed_and_said_so(rec) -> None:
    [response] = rec.recommend([{"request_id": "r", "text": "dramas from the 1950s", "k": 4}])
    assert response["intent"]["relaxed"] == ["years 1950-1959 relaxed: 0 item(s) fit"]
    assert sorted(i["item_id"] for i in response["items"]) == ["10", "14", "2", "6"]


@pytest.mark.slow
def test_a_reference_item_is_not_recommended(rec) -> None:
    [response] = rec.recommend([{"request_id": "r", "text": "something like Movie 4", "k": 14}])
    assert response["intent"]["like"] == [{"item_id": "4", "title": "Movie 4"}]
    assert "4" not in [i["item_id"] for i in response["items"]] and len(response["items"]) == 14


@pytest.mark.slow
def test_the_index_path_and_score_follow_the_same_intent(rec) -> None:
    requests = [
        {"request_id": "a", "text": "action movies made after 1988, nothing with drama", "k": 5},
        {"request_id": "b", "text": "I like Action and Drama movies.", "k": 5},
        {"request_id": "c", "k": 5},
    ]
    exact, indexed = rec.recommend(requests), rec.recommend_with_index(_ExactIndex(rec), requests)
    # the same answers; a score may differ in its last printed digit (the index sums u·v + b in another order)
    strip = lambda rs: [{**r, "items": [{**i, "score": None} for i in r["items"]]} for r in rs]  # noqa: E731
    assert strip(indexed) == strip(exact)
    scores = lambda rs: [i["score"] for r in rs for i in r["items"]]  # noqa: E731
    assert scores(indexed) == pytest.approx(scores(exact), abs=1e-5)
    assert exact[0]["items"][0]["item_id"] == "12" and {i["item_id"] for i in exact[0]["items"][1:3]} == {"4", "8"}
    assert "drama" not in {g.lower() for i in exact[0]["items"] for g in i["genres"]}
    assert exact[1]["intent"]["taste"] and "intent" not in exact[2]
    ranked = np.argsort(-rec.score([rec.query_for(requests[0])])[0], kind="stable")[:5]
    assert [rec.item_ids[r] for r in ranked] == [i["item_id"] for i in exact[0]["items"]]


@pytest.mark.slow
def test_without_the_gate_the_text_only_reaches_the_model(rec) -> None:
    request = {"request_id": "r", "text": "action movies from before 1990, no comedy", "k": 15}
    gated = rec.recommend([request])[0]
    rec.intent_gate = False
    try:
        plain = rec.recommend([request])[0]
    finally:
        rec.intent_gate = True
    assert "intent" not in plain and len(plain["items"]) == 15 and len(gated["items"]) == 7
