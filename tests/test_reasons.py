"""Reasons (`recsys_tasks.explain.reasons`) on a hand-made catalog whose right answers are known.

Eight items, six trained (rows 0-5) and two new (rows 6, 7); item vectors in 3-d and text
vectors in 2-d chosen so each cosine is known; KG links: Alien and Blade Runner share a director,
Blade Runner and Nova an actor, Titanic and The Godfather an actor, Blade Runner and Fargo an
actor (a link the model's vectors contradict); 3 female students aged 18-24 liked The Godfather,
3 male engineers aged 35-44 liked Fargo, and all 6 liked Alien.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.config import ExtractConfig
from recsys_tasks.data.sources import load_source
from recsys_tasks.data.validate import validate
from recsys_tasks.explain import genres
from recsys_tasks.explain.genres import GenreMatcher
from recsys_tasks.explain.reasons import LEVELS, Explainer, describe_segment, display_title, quote
from recsys_tasks.kg.links import MIN_PAIRS, RELATION_LIFT, item_links, reason_links, relation_lift
from recsys_tasks.model.popularity import DemographicPopularity
from recsys_tasks.protocol.queries import Query

TITLES = ["Alien", "Blade Runner", "Titanic", "Godfather, The", "Fargo", "Heat", "Nova", "Moonshot"]
GENRES = ["Horror|Sci-Fi", "Sci-Fi", "Drama|Romance", "Crime|Drama", "Comedy|Crime", "Action|Crime", "Sci-Fi", "Comedy"]
ENTITIES = ["m.alien", "m.blade", "m.titanic", "m.godfather", "m.fargo", "m.heat", "m.nova", ""]
N_ID = 6  # rows 6 and 7 are new items (no ID row)
ALIEN, BLADE, TITANIC, GODFATHER, FARGO, HEAT, NOVA, MOONSHOT = range(8)
F_STUDENT = {"age": 20, "gender": "F", "occupation": "student", "zip_code": ""}
M_ENGINEER = {"age": 40, "gender": "M", "occupation": "engineer", "zip_code": ""}

# Item vectors: three directions 120° apart (a: Alien, Blade Runner, Nova; b: Titanic, The
# Godfather; c: Fargo, Heat, Moonshot), perturbations that cancel, so the trained items' mean is 0
# and centred cosines are plain ones: Alien-Blade 0.96, Alien-Nova 0.995, Blade-Nova 0.95,
# Titanic-Godfather 0.81, Fargo-Heat 0.85, Titanic-Heat 0.56, Fargo-Moonshot 0.996; Titanic-Fargo
# 0.03; a-b, a-c and b-c pairs about -0.5.
VECS = np.array(
    [
        [1.0, 0.0, 0.0],
        [1.0, 0.0, 0.3],
        [-0.5, 0.266, 0.0],
        [-0.5, 0.866, -0.3],
        [-0.5, -0.866, 0.0],
        [-0.5, -0.266, 0.0],
        [1.0, 0.1, 0.0],
        [-0.4, -0.866, 0.0],
    ],
    np.float32,
)
# Text ⊕ KG content (text_dim 2): the text parts of Alien, Blade Runner and Nova are at 0.8-1.0 of
# "space", the others far from it; cosines with "space" have mean 0.39 and deviation 0.43 over the
# catalog, so Blade Runner's standard score is 0.95, Titanic's -0.9.
SPACE = np.array([1.0, 0.0], np.float32)
TEXT = np.array(
    [[0.9, 0.436], [0.8, 0.6], [0.0, 1.0], [0.1, 0.995], [0.2, 0.98], [0.1, 0.995], [1.0, 0.0], [0.0, 1.0]], np.float32
)
CONTENT = np.hstack([TEXT, np.zeros((8, 2), np.float32)])


def _catalog() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [str(i + 1) for i in range(8)],
            "title": TITLES,
            "year": [1979] * 8,
            "genres": GENRES,
            "description": "",
            "entity_id": ENTITIES,
            "id_row": [min(i, N_ID) for i in range(8)],
        }
    )


def _links() -> pd.DataFrame:
    kg = pd.DataFrame(
        [
            ["m.alien", "film.film.directed_by", "m.scott"],
            ["m.scott", "film.director.film", "m.blade"],  # the other direction, same relation
            ["m.blade", "film.film.actor", "m.hauer"],
            ["m.nova", "film.film.actor", "m.hauer"],
            ["m.titanic", "film.film.actor", "m.actor2"],
            ["m.godfather", "film.film.actor", "m.actor2"],
            ["m.blade", "film.film.actor", "m.far"],
            ["m.fargo", "film.film.actor", "m.far"],
            ["m.titanic", "film.film.directed_by", "m.lonely"],  # nobody else: dropped
            ["m.alien", "film.film.country", "m.usa"],  # unmapped relation: dropped
            ["m.blade", "film.film.country", "m.usa"],
        ],
        columns=["head_id", "relation_id", "tail_id"],
    )
    return item_links(_catalog(), kg)


def _users_and_histories() -> tuple[pd.DataFrame, pd.DataFrame]:
    users, rows = [], []
    for u in range(3):
        users += [[f"f{u}", 20, "F", "student"], [f"m{u}", 40, "M", "engineer"]]
        rows += [[f"f{u}", "4", 5.0], [f"f{u}", "1", 5.0], [f"m{u}", "5", 4.0], [f"m{u}", "1", 4.0]]
    rows += [["f0", "3", 2.0]]  # not a positive
    users_frame = pd.DataFrame(users, columns=["user_id", "age", "gender", "occupation"]).assign(zip_code="")
    histories = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]).assign(timestamp=0)
    return users_frame, histories


def _popular(histories: pd.DataFrame, users: pd.DataFrame, min_group: int = 3) -> dict:
    """Each segment's 2 most liked items (segments of at least ``min_group`` training users), as a bundle's."""
    items = _catalog()["item_id"].tolist()
    return DemographicPopularity(items, histories, users, 4.0, min_group).most_liked(LEVELS, top_n=2)


def _make_explainer() -> Explainer:
    users, histories = _users_and_histories()
    # Eight items cannot make a standard score of 2.5: the taste threshold is lowered to 0.9.
    return Explainer(
        _catalog(), CONTENT, _links(), _popular(histories, users), N_ID, text_dim=2, top_n_overall=2, taste_z=0.9
    )


@pytest.fixture
def explainer() -> Explainer:
    return _make_explainer()


def _explain(
    explainer: Explainer,
    top: list[int],
    history: list[int] = (),
    ratings: list[float] | None = None,
    profile: dict | None = None,
    text: str | None = None,
    taste: np.ndarray | None = None,
) -> list[str]:
    query = Query("u", profile or {}, (), text)
    ratings = [5.0] * len(history) if ratings is None else ratings
    return explainer.explain(
        query, np.array(history, np.int64), np.array(ratings, np.float64), np.array(top, np.int64), VECS, CONTENT, taste
    )


# ---------------------------------------------------------------- bundle-time tables
def test_item_links_keep_shared_mapped_relations_in_plain_words() -> None:
    links = _links()
    assert links.to_numpy().tolist() == [
        ["m.alien", "director", "m.scott"],
        ["m.blade", "actor", "m.far"],
        ["m.blade", "actor", "m.hauer"],
        ["m.blade", "director", "m.scott"],
        ["m.fargo", "actor", "m.far"],
        ["m.godfather", "actor", "m.actor2"],
        ["m.nova", "actor", "m.hauer"],
        ["m.titanic", "actor", "m.actor2"],
    ]


def test_item_links_of_the_tiny_dataset(tiny_recbole_dir) -> None:
    """The conftest KG: films 3 and 4 share person1 as director (stated in both directions)."""
    dataset, _ = validate(load_source(str(tiny_recbole_dir)), ExtractConfig(source=str(tiny_recbole_dir)))
    links = item_links(dataset.items, dataset.kg)
    assert links.to_numpy().tolist() == [["m.film3", "director", "m.person1"], ["m.film4", "director", "m.person1"]]


def _co_liked_catalog() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """120 films; films 2k and 2k+1 share a director and are liked by the same people; an actor
    links film k to film k+37, whose likers are unrelated; a writer links films 0, 1, 2 only."""
    n = 120
    items = pd.DataFrame({"item_id": [str(i) for i in range(n)], "entity_id": [f"m.{i}" for i in range(n)]})
    kg = [[f"m.{2 * k + j}", "film.film.directed_by", f"m.d{k}"] for k in range(n // 2) for j in (0, 1)]
    kg += [[f"m.{k}", "film.film.actor", f"m.a{k}"] for k in range(n)]
    kg += [[f"m.{(k + 37) % n}", "film.film.actor", f"m.a{k}"] for k in range(n)]
    kg += [[f"m.{k}", "film.film.written_by", "m.w"] for k in range(3)]
    rng = np.random.default_rng(1)
    likes = [
        [f"u{u}", str(2 * k + j), 5.0] for u in range(300) for k in rng.choice(n // 2, 2, replace=False) for j in (0, 1)
    ]
    histories = pd.DataFrame(likes, columns=["user_id", "item_id", "rating"]).assign(timestamp=0)
    return items, pd.DataFrame(kg, columns=["head_id", "relation_id", "tail_id"]), histories


def test_a_relation_whose_links_are_not_liked_together_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    items, kg, histories = _co_liked_catalog()
    lifts = relation_lift(item_links(items, kg), items["item_id"].tolist(), items["entity_id"].tolist(), histories)
    assert lifts["director"][0] > 10 * RELATION_LIFT and lifts["director"][1] == 120
    assert lifts["actor"][0] < RELATION_LIFT and lifts["actor"][1] >= MIN_PAIRS
    assert lifts["writer"][1] < MIN_PAIRS  # three links: too few to judge
    links, reported = reason_links(items, kg, histories)
    assert set(links["relation"]) == {"director", "writer"}  # the writer is not judged, so kept
    assert reported["actor"] == [round(lifts["actor"][0], 4), lifts["actor"][1]]
    assert "actor" in caplog.text and "director" not in caplog.text


def test_segment_popularity_counts_positives_per_large_enough_segment() -> None:
    users, histories = _users_and_histories()
    popular = _popular(histories, users, min_group=3)
    assert popular[()] == ["1", "4", "5"]  # 6 positives, then 3 and 3 (ties by id); "3" was rated 2
    assert popular[("gender=F", "age=18-24", "occupation=student")] == ["1", "4"]
    assert popular[("occupation=engineer",)] == ["1", "5"]
    assert ("gender=F",) in popular and ("age=35-44",) in popular
    assert _popular(histories, users, min_group=4).keys() == {()}  # groups of 3


# ---------------------------------------------------------------- words
@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"gender": "F", "age": "18-24", "occupation": "student"}, "female students aged 18-24"),
        ({"age": "18-24", "occupation": "student"}, "students aged 18-24"),
        ({"gender": "M", "occupation": "marketing"}, "men in marketing"),
        ({"gender": "F", "age": "56+", "occupation": "retired"}, "retired women aged 56+"),
        ({"age": "under 18"}, "viewers under 18"),
        ({"gender": "F"}, "women"),
        ({"occupation": "salesman"}, "salespeople"),
        ({"gender": "X", "occupation": "student"}, None),  # no words for it: no reason claims it
    ],
)
def test_segments_are_described_in_plain_words(values: dict, words: str | None) -> None:
    assert describe_segment(values) == words


def test_titles_and_quotes_read_naturally() -> None:
    assert display_title("Godfather, The") == "The Godfather" and display_title("Crash, The") == "The Crash"
    assert display_title("Alien") == "Alien" and display_title("", "42") == "item 42"
    assert quote("I like Sci-Fi.") == "I like Sci-Fi"
    assert quote("I like slow films about space travel and old robots.") == "I like slow films about space travel…"


# ---------------------------------------------------------------- each kind of reason
def test_kg_link_to_a_history_item_names_the_relation_and_the_title(explainer: Explainer) -> None:
    assert _explain(explainer, [BLADE], history=[ALIEN]) == ["shares its director with Alien"]
    assert _explain(explainer, [GODFATHER], history=[TITANIC]) == ["shares an actor with Titanic"]


def test_the_strongest_relation_wins(explainer: Explainer) -> None:
    """Blade Runner shares an actor with Nova and its director with Alien: the director is named."""
    assert _explain(explainer, [BLADE], history=[NOVA, ALIEN]) == ["shares its director with Alien"]
    assert _explain(explainer, [BLADE], history=[NOVA]) == ["shares an actor with Nova"]


def test_a_kg_link_the_models_vectors_contradict_is_not_named(explainer: Explainer) -> None:
    """Blade Runner and Fargo share an actor, but their vectors point apart (cosine -0.48)."""
    assert _explain(explainer, [BLADE], history=[FARGO]) == ["a top pick overall"]  # Alien is not theirs to cite


def test_a_history_item_rated_below_the_threshold_is_never_cited(explainer: Explainer) -> None:
    # Not even as the closest most liked item: Alien is; no other one is close.
    assert _explain(explainer, [BLADE], history=[ALIEN], ratings=[2.0], profile=F_STUDENT) == [
        "a top match for your profile"
    ]
    assert _explain(explainer, [BLADE], history=[ALIEN], ratings=[2.0]) == ["a top pick overall"]
    assert _explain(explainer, [BLADE], history=[ALIEN], ratings=[0.0]) == ["shares its director with Alien"]  # unrated


def test_stated_taste_quotes_the_genre_as_written(explainer: Explainer) -> None:
    assert _explain(explainer, [NOVA, BLADE], text="I'm into sci-fi these days") == ["matches 'sci-fi'"] * 2
    assert _explain(explainer, [FARGO], text="Crime and COMEDIES please") == ["matches 'Crime'"]
    assert _explain(explainer, [ALIEN], text="I like science fiction") == ["matches 'science fiction'"]


def test_a_negated_genre_is_no_reason(explainer: Explainer) -> None:
    assert explainer.taste_genres("Sci-Fi but no horror, please") == {"sci-fi": "Sci-Fi"}
    assert explainer.taste_genres("I don't like comedy. Drama!") == {"drama": "Drama"}


def test_similar_history_item_by_the_models_vectors(explainer: Explainer) -> None:
    """Nova (new, no KG link) has cosine 0.99 with Alien: the history path explains it."""
    assert _explain(explainer, [NOVA], history=[TITANIC, ALIEN]) == ["similar to Alien"]


def test_stated_taste_by_text_similarity_when_no_genre_is_named(explainer: Explainer) -> None:
    text = "Slow films about space travel, with robots in them."
    blade, titanic = _explain(explainer, [BLADE, TITANIC], text=text, taste=SPACE, profile=F_STUDENT)
    assert blade == "matches 'Slow films about space travel, with…'" and not titanic.startswith("matches")
    assert explainer.taste_z(SPACE, CONTENT[[BLADE, TITANIC], :2] @ SPACE) == pytest.approx([0.95, -0.9], abs=0.01)


def test_popular_in_the_finest_segment(explainer: Explainer) -> None:
    assert _explain(explainer, [GODFATHER], profile=F_STUDENT) == ["popular with female students aged 18-24"]
    assert _explain(explainer, [FARGO], profile=M_ENGINEER) == ["popular with male engineers aged 35-44"]
    # An unknown gender: the finest segment that can be named (age and occupation) is used.
    assert _explain(explainer, [GODFATHER], profile={**F_STUDENT, "gender": ""}) == ["popular with students aged 18-24"]


def test_a_new_item_is_explained_by_the_closest_liked_history_item(explainer: Explainer) -> None:
    assert _explain(explainer, [NOVA]) == ["new in the catalog"]  # no history: no title to cite
    assert _explain(explainer, [MOONSHOT], history=[HEAT]) == ["new: similar content to Heat"]  # cosine 0.80
    assert _explain(explainer, [MOONSHOT], history=[TITANIC]) == ["new in the catalog"]  # not close


# ---------------------------------------------------------------- a reason names only what the request holds
EVERY = [ALIEN, BLADE, TITANIC, GODFATHER, FARGO, HEAT, NOVA, MOONSHOT]
CITING = ("shares ", "won the same award", "similar to ", "new: similar content to ")


@pytest.mark.parametrize(
    ("kind", "present", "lacking"),
    [
        # a KG link or a similar item needs a history item the person liked
        (CITING, dict(history=[ALIEN]), dict(profile=F_STUDENT, text="sci-fi")),
        (CITING, dict(history=[ALIEN]), dict(history=[ALIEN], ratings=[1.0], profile=F_STUDENT)),
        # a matched genre or taste needs text
        (("matches ",), dict(text="sci-fi"), dict(history=[ALIEN, FARGO], profile=F_STUDENT)),
        # a segment needs a profile; so does the profile's fallback
        (("popular with ", "a top match for your profile"), dict(profile=F_STUDENT), dict(history=[HEAT], text="x")),
    ],
)
def test_no_reason_names_what_the_request_lacks(
    explainer: Explainer, kind: tuple, present: dict, lacking: dict
) -> None:
    assert any(r.startswith(kind) for r in _explain(explainer, EVERY, **present))  # the kind exists ...
    assert not any(r.startswith(kind) for r in _explain(explainer, EVERY, **lacking))  # ... only with its input


@pytest.mark.parametrize("history", [[], [HEAT], [TITANIC, FARGO], [ALIEN, BLADE, NOVA]])
def test_every_title_a_reason_names_is_a_liked_history_item(explainer: Explainer, history: list[int]) -> None:
    titles = {explainer.titles[r] for r in range(len(EVERY))}
    for profile in ({}, F_STUDENT):
        for reason in _explain(explainer, EVERY, history=history, profile=profile):
            named = {t for t in titles if reason.endswith(f" {t}")}
            assert named <= {explainer.titles[h] for h in history}, reason


def test_popular_overall_and_the_last_resort(explainer: Explainer) -> None:
    """Alien and The Godfather are the two most liked (Fargo ties with The Godfather, a later id)."""
    assert _explain(explainer, [ALIEN, GODFATHER, HEAT]) == ["popular overall", "popular overall", "a top pick overall"]


def test_a_weaker_history_link_gives_way_to_the_segment(explainer: Explainer) -> None:
    """Fargo and Heat: cosine 0.85, under `SIMILAR_MIN`: the segment's popularity comes first;
    without a profile, the closest history item is the reason."""
    assert _explain(explainer, [FARGO], history=[HEAT], profile=M_ENGINEER) == [
        "popular with male engineers aged 35-44"
    ]
    assert _explain(explainer, [FARGO], history=[HEAT]) == ["similar to Heat"]
    assert _explain(explainer, [TITANIC], history=[FARGO]) == ["a top pick overall"]  # 0.03: not similar


def test_one_reason_per_item_in_order_and_deterministic(explainer: Explainer) -> None:
    top = [BLADE, NOVA, GODFATHER, HEAT, ALIEN]
    reasons = _explain(explainer, top, history=[ALIEN, TITANIC], profile=F_STUDENT, text="sci-fi")
    assert reasons == [
        "shares its director with Alien",
        "matches 'sci-fi'",
        "shares an actor with Titanic",
        "similar to Titanic",
        "matches 'sci-fi'",
    ]  # Heat-Titanic 0.56: the weaker kind
    assert reasons == _explain(explainer, top, history=[ALIEN, TITANIC], profile=F_STUDENT, text="sci-fi")


def test_items_changed_or_added_later_are_explained_with_their_new_data(explainer: Explainer) -> None:
    explainer.set_items(
        [NOVA, 8],
        [
            {"item_id": "7", "title": "Nova, La", "genres": "Drama"},
            {"item_id": "9", "title": "Rift", "genres": "Western", "entity_id": "m.fargo"},
        ],
        [False, False],
    )
    vecs = np.vstack([VECS, [[1.0, 0.0, 0.3]]])  # Rift points where Blade Runner does
    content = np.vstack([CONTENT, np.zeros((1, 4), np.float32)])
    explain = lambda top, history=(), text=None: explainer.explain(  # noqa: E731
        Query("u", {}, (), text),
        np.array(history, np.int64),
        np.full(len(history), 5.0),
        np.array(top),
        vecs,
        content,
        None,
    )
    assert explain([NOVA]) == ["new in the catalog"] and explainer.titles[NOVA] == "La Nova"
    assert explain([NOVA], text="sci-fi") == ["new in the catalog"]  # no longer Sci-Fi
    assert explain([NOVA], history=[ALIEN]) == ["similar to Alien"]
    assert explain([8], text="westerns") == ["matches 'westerns'"]  # a genre the catalog did not have
    assert explain([8], history=[BLADE]) == ["shares an actor with Blade Runner"]  # its entity's links


def test_a_bundle_without_links_or_liked_items_still_explains() -> None:
    users, histories = _users_and_histories()
    bare = Explainer(_catalog(), CONTENT, None, _popular(histories.iloc[:0], users), N_ID, text_dim=2)
    query = Query("u", F_STUDENT, ())
    reasons = bare.explain(query, np.array([ALIEN]), np.array([5.0]), np.array([BLADE, NOVA]), VECS, CONTENT, None)
    assert reasons == ["similar to Alien", "similar to Alien"]  # no KG links: the model's vectors
    assert bare.explain(query, np.zeros(0, np.int64), np.zeros(0), np.array([BLADE, NOVA]), VECS, CONTENT, None) == [
        "a top match for your profile",
        "new in the catalog",
    ]  # nothing liked at all


# ---------------------------------------------------------------- what is remembered = what is computed
def test_kept_unit_vectors_give_the_vectors_and_reasons_computed_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog up to `UNIT_ROWS` keeps every centred unit vector; a bigger one centres a request's
    rows when asked: the same numbers, so the same reasons."""
    from recsys_tasks.explain import reasons

    make = _make_explainer
    calls = [
        dict(top=[BLADE, NOVA, GODFATHER, HEAT, ALIEN], history=[ALIEN, TITANIC], profile=F_STUDENT, text="sci-fi"),
        dict(top=[FARGO, TITANIC, NOVA, MOONSHOT], history=[HEAT, BLADE], ratings=[5.0, 2.0], profile=M_ENGINEER),
        dict(top=[NOVA, MOONSHOT, ALIEN], history=[], profile=F_STUDENT, text="slow films", taste=SPACE),
    ]
    kept = make()
    kept_reasons = [_explain(kept, **c) for c in calls]
    monkeypatch.setattr(reasons, "UNIT_ROWS", 0)
    computed = make()
    assert [_explain(computed, **c) for c in calls] == kept_reasons
    assert kept._unit is not None and computed._unit is None
    rows = [MOONSHOT, ALIEN, NOVA, HEAT, ALIEN]
    np.testing.assert_array_equal(kept._unit_rows(rows), computed._unit_rows(rows))


def test_the_segment_named_is_the_finest_whose_most_liked_items_hold_the_item(explainer: Explainer) -> None:
    for profile in (F_STUDENT, M_ENGINEER, {"gender": "F"}, {"age": 40, "occupation": "engineer"}, {}):
        segments = explainer.segments(profile)
        expected = {row: next((w for w, rows in segments if row in rows), None) for row in range(len(TITLES))}
        words = explainer._segment_words(explainer._profile_key(profile))
        assert {row: words.get(row) for row in range(len(TITLES))} == expected


# ---------------------------------------------------------------- stated genres (`explain.genres`)
VOCAB = [
    "action",
    "animation",
    "children's",
    "comedy",
    "crime",
    "drama",
    "film-noir",
    "horror",
    "romance",
    "sci-fi",
    "western",
]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("I love sci-fi and old film noir, but not horror", {"sci-fi": "sci-fi", "film-noir": "film noir"}),
        ("Sci-Fi but no horror, please", {"sci-fi": "Sci-Fi"}),
        ("I don't like comedy. Drama!", {"drama": "Drama"}),
        ("no comedy except funny dramas", {"comedy": "funny", "drama": "dramas"}),
        ("Don't show me Westerns: science fiction!", {"sci-fi": "science fiction"}),
        ("I hate kids movies but love animated ones", {"animation": "animated"}),
        ("not a fan of romance; romantic comedies are fine", {"romance": "romantic", "comedy": "comedies"}),
        (
            "Dramas, crime, comedies and cartoons; never action",
            {"drama": "Dramas", "crime": "crime", "comedy": "comedies", "animation": "cartoons"},
        ),
        (
            "Action! Not actionable. Film-noir without romance, but scifi",
            {"action": "Action", "film-noir": "Film-noir", "sci-fi": "scifi"},
        ),
        ("nothing", {}),
        ("", {}),
        (None, {}),
    ],
)
def test_stated_genres_known_answers(text: str | None, named: dict[str, str]) -> None:
    """What the clause-by-clause parser has always answered (each phrase as written, first named
    first, negated ones left out): the one-pass parser answers the same."""
    assert GenreMatcher(VOCAB).find(text) == named


def _find_per_prefix(matcher: GenreMatcher, text: str) -> dict[str, str]:
    """The former parser, as a reference: for each genre named, the whole text before it is split
    into clauses again and its last clause searched for a negation (quadratic in the text)."""
    found: dict[str, str] = {}
    for match in matcher._pattern.finditer(text):
        if genres._NEGATION.search(genres._CLAUSE.split(text[: match.start()])[-1]):
            continue
        found.setdefault(matcher.names[int(match.lastgroup[1:])], match.group(0))
    return found


def test_the_one_pass_parser_answers_as_the_per_prefix_one_on_random_texts() -> None:
    """Random texts of genre names, aliases, negations, clause ends and near misses ("butter",
    "nothing", "cannot"), joined with and without spaces: the same genres and phrases."""
    words = [
        "sci-fi",
        "Sci Fi",
        "scifi",
        "science fiction",
        "film noir",
        "noir",
        "kids",
        "children's",
        "childrens",
        "cartoon",
        "cartoons",
        "animated",
        "romantic",
        "funny",
        "comedy",
        "comedies",
        "drama",
        "dramas",
        "western",
        "Westerns",
        "crime",
        "action",
        "horror",
        "but",
        "BUT",
        "except",
        "butter",
        "exception",
        "not",
        "no",
        "nor",
        "never",
        "don't",
        "dont",
        "doesn't",
        "hate",
        "dislike",
        "without",
        "nothing",
        "cannot",
        ".",
        ";",
        ":",
        "!",
        "?",
        ",",
        "'",
        "-",
        "(",
        ")",
        "I",
        "like",
    ]
    matcher = GenreMatcher(VOCAB)
    rng = np.random.default_rng(7)
    for _ in range(1500):
        picked = rng.choice(words, rng.integers(1, 25))
        text = "".join(w + str(rng.choice([" ", " ", " ", "", ",", "-"])) for w in picked)
        assert matcher.find(text) == _find_per_prefix(matcher, text), text


class _Scanned:
    """A compiled pattern that counts the characters of every string it is run over."""

    def __init__(self, pattern: re.Pattern):
        self.pattern, self.chars = pattern, 0

    def __getattr__(self, name: str):
        method = getattr(self.pattern, name)
        if not callable(method):
            return method

        def scan(string: str, *args, **kwargs):
            self.chars += len(string)
            return method(string, *args, **kwargs)

        return scan


def test_stated_genres_are_found_in_one_pass_over_a_long_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10,000-character sentence naming a genre every few words: the clause and negation patterns,
    and the genres', are each run over at most twice the text (the per-prefix parser ran the clause
    splitter over every prefix before a genre: ~1,000 genres x 5,000 characters)."""
    clause, negation = _Scanned(genres._CLAUSE), _Scanned(genres._NEGATION)
    monkeypatch.setattr(genres, "_CLAUSE", clause)
    monkeypatch.setattr(genres, "_NEGATION", negation)
    matcher = GenreMatcher(VOCAB)
    named = _Scanned(matcher._pattern)
    matcher._pattern = named
    text = ("I love sci-fi and drama, not horror; but comedies, never westerns. " * 200)[:10_000]
    assert matcher.find(text) == {"sci-fi": "sci-fi", "drama": "drama", "comedy": "comedies"}
    assert named.chars <= 2 * len(text)
    assert 0 < clause.chars <= 2 * len(text) and 0 < negation.chars <= 2 * len(text)
