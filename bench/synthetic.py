"""Synthetic RecBole atomic files (.inter .user .item .kg .link) of any size, with structure a model can learn.

Users fall into taste clusters that their demographics predict (additive age-band, gender and occupation
effects, then noise); each cluster has its own genres, decade, title and description words and KG entities
(directors, actors, writers, subjects shared within the cluster). Items have Zipf popularity within and
across clusters, users a long-tailed number of interactions drawn mostly from their own cluster, and
ratings are higher inside it. The columns are the bundled MovieLens-100K's (plus an item description).
Seeded and vectorised; the interactions are written in chunks of users, so memory stays bounded.

    python bench/synthetic.py --interactions 1000000 --users 20000 --items 5000 --out DIR --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
OCCUPATIONS = (
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "none",
    "other",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
)
# MovieLens' age bands as (lowest age, highest age, share of users)
AGE_BANDS = (
    (12, 17, 0.05),
    (18, 24, 0.18),
    (25, 34, 0.35),
    (35, 44, 0.2),
    (45, 49, 0.08),
    (50, 55, 0.08),
    (56, 73, 0.06),
)
# one theme per taste cluster: its genres and the words its titles and descriptions are made of
THEMES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("Sci-Fi", "Adventure"), ("galaxy", "orbit", "rocket", "planet", "comet", "astronaut", "nebula", "starship")),
    (("Horror", "Thriller"), ("ghost", "haunted", "blood", "curse", "demon", "graveyard", "scream", "shadow")),
    (("Romance", "Drama"), ("love", "kiss", "wedding", "heart", "letters", "summer", "bride", "promise")),
    (("Crime", "Film-Noir"), ("detective", "heist", "gangster", "murder", "alley", "cigarette", "police", "mob")),
    (("Western", "Action"), ("cowboy", "saloon", "desert", "sheriff", "outlaw", "horse", "frontier", "canyon")),
    (("Animation", "Children's"), ("puppy", "toys", "bunny", "dragon", "candy", "balloon", "fairy", "kitten")),
    (("War", "Drama"), ("soldier", "battle", "trench", "general", "bomber", "regiment", "siege", "medal")),
    (("Comedy", "Romance"), ("wacky", "prank", "roommate", "party", "blunder", "clown", "vacation", "goofy")),
    (("Musical", "Comedy"), ("song", "dance", "broadway", "melody", "chorus", "piano", "stage", "rhythm")),
    (("Documentary",), ("nature", "history", "science", "ocean", "climate", "wildlife", "factory", "island")),
    (("Fantasy", "Adventure"), ("wizard", "kingdom", "sword", "quest", "elves", "castle", "sorcerer", "throne")),
    (("Mystery", "Thriller"), ("secret", "clue", "puzzle", "vanished", "stranger", "manor", "riddle", "witness")),
    (("Action", "Thriller"), ("explosion", "chase", "commando", "hostage", "agent", "mission", "bomb", "rescue")),
    (("Drama",), ("family", "father", "farm", "winter", "hospital", "village", "mother", "funeral")),
    (("Sci-Fi", "Horror"), ("robot", "mutant", "virus", "android", "laboratory", "clone", "invasion", "cyborg")),
    (("Comedy",), ("office", "boss", "wedding", "neighbors", "road", "trip", "dog", "diner")),
    (("Crime", "Drama"), ("prison", "judge", "trial", "lawyer", "verdict", "jury", "cell", "parole")),
    (("Adventure", "Action"), ("jungle", "treasure", "pirate", "volcano", "expedition", "temple", "map", "ship")),
    (("Children's", "Musical"), ("circus", "puppet", "lullaby", "snowman", "carousel", "elf", "teddy", "parade")),
    (("Romance", "Musical"), ("paris", "waltz", "moonlight", "serenade", "ballroom", "violin", "rose", "gondola")),
)
GENERIC_WORDS = ("the", "last", "night", "return", "city", "story", "day", "world", "man", "woman", "old", "new")
DECADES = (1930, 1940, 1950, 1960, 1970, 1980, 1990, 2000, 2010)
KG_ROLES = (  # (relation, how many an item has, entities per cluster per 100 items)
    ("film.film.directed_by", 1, 12),
    ("film.film.actor", 3, 30),
    ("film.film.written_by", 1, 15),
    ("film.film.subjects", 1, 4),
)
START_TIME = 880_000_000  # epoch seconds; interactions span three years from here
SPAN = 3 * 365 * 86_400


@dataclass(frozen=True)
class Spec:
    """What to generate: sizes, the seed and how strong the structure is."""

    interactions: int
    users: int
    items: int
    seed: int = 0
    clusters: int = 20
    in_cluster: float = 0.65  # share of a user's interactions drawn from their own cluster's items
    zipf: float = 0.9  # item popularity exponent
    min_per_user: int = 5
    link_frac: float = 0.95  # items linked to a KG entity
    name: str = "synthetic"
    chunk: int = 2_000_000  # interactions per written chunk (memory bound)

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < 2:
            raise ValueError(f"need at least 1 user and 2 items, got users={self.users} items={self.items}")
        if not 1 <= self.clusters <= len(THEMES):
            raise ValueError(f"clusters must be 1..{len(THEMES)}, got {self.clusters}")
        if self.items < 2 * self.clusters:
            raise ValueError(f"items ({self.items}) must be at least twice the clusters ({self.clusters})")
        if self.interactions < self.min_per_user * self.users:
            raise ValueError(
                f"interactions ({self.interactions:,}) must be at least {self.min_per_user} per user "
                f"({self.min_per_user * self.users:,} for {self.users:,} users)"
            )
        if self.interactions > self.users * self.items // 4:
            raise ValueError(
                f"interactions ({self.interactions:,}) must be at most a quarter of users x items "
                f"({self.users * self.items // 4:,}): more would not be sparse enough to sample without repeats"
            )
        if not 0 <= self.in_cluster <= 1:
            raise ValueError(f"in_cluster must be in [0, 1], got {self.in_cluster}")


@dataclass(frozen=True)
class World:
    """The latent structure: every user's and item's cluster, and item popularity."""

    user_cluster: np.ndarray
    item_cluster: np.ndarray
    item_weight: np.ndarray  # Zipf popularity, sums to 1
    item_quality: np.ndarray  # rating offset per item
    user_bias: np.ndarray  # rating offset per user
    in_cluster: float  # share of interactions drawn from the user's own cluster


def generate(spec: Spec, out: str | Path) -> dict:
    """Write ``<out>/<name>.{inter,user,item,kg,link}`` and ``<out>/spec.json``; a summary of what was written."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    users, user_cluster = _users(spec, rng)
    items, item_cluster, item_weight = _items(spec, rng)
    kg, links = _kg(spec, item_cluster, rng)
    world = World(
        user_cluster,
        item_cluster,
        item_weight,
        rng.normal(0.0, 0.4, spec.items),
        rng.normal(0.0, 0.35, spec.users),
        spec.in_cluster,
    )
    stem = out / spec.name
    _write(users, stem.with_suffix(".user"), ["user_id:token", "age:token", "gender:token", "occupation:token"])
    _write(
        items,
        stem.with_suffix(".item"),
        ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq", "description:token_seq"],
    )
    _write(kg, stem.with_suffix(".kg"), ["head_id:token", "relation_id:token", "tail_id:token"])
    _write(links, stem.with_suffix(".link"), ["item_id:token", "entity_id:token"])
    n_inter = _interactions(spec, world, rng, stem.with_suffix(".inter"))
    summary = {
        **asdict(spec),
        "written_interactions": n_inter,
        "kg_triples": len(kg),
        "links": len(links),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "spec.json").write_text(json.dumps(summary, indent=1))
    return summary


def _users(spec: Spec, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Demographics, and a taste cluster from additive age-band, gender and occupation effects plus noise."""
    shares = np.array([s for _, _, s in AGE_BANDS])
    band = rng.choice(len(AGE_BANDS), spec.users, p=shares / shares.sum())
    low = np.array([lo for lo, _, _ in AGE_BANDS])[band]
    high = np.array([hi for _, hi, _ in AGE_BANDS])[band]
    age = low + (rng.random(spec.users) * (high - low + 1)).astype(np.int64)
    gender = rng.choice(2, spec.users, p=[0.7, 0.3])
    occ_share = rng.dirichlet(np.full(len(OCCUPATIONS), 2.0))
    occupation = rng.choice(len(OCCUPATIONS), spec.users, p=occ_share)
    k = spec.clusters
    logits = (
        1.6 * rng.normal(size=(len(AGE_BANDS), k))[band]
        + 1.2 * rng.normal(size=(2, k))[gender]
        + 1.6 * rng.normal(size=(len(OCCUPATIONS), k))[occupation]
        + rng.gumbel(size=(spec.users, k))
    )
    cluster = logits.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "user_id": np.arange(1, spec.users + 1),
            "age": age,
            "gender": np.array(["M", "F"])[gender],
            "occupation": np.array(OCCUPATIONS)[occupation],
        }
    )
    return frame, cluster


def _items(spec: Spec, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Titles, years, genres and descriptions that carry the item's cluster; Zipf popularity."""
    n, k = spec.items, spec.clusters
    cluster = rng.integers(0, k, n)
    cluster[:k] = np.arange(k)  # every cluster has items
    rank = rng.permutation(n)
    weight = 1.0 / (rank + 1.0) ** spec.zipf
    weight /= weight.sum()
    words = np.array([THEMES[c][1] for c in range(k)])  # k x 8
    pick = rng.integers(0, words.shape[1], (n, 4))
    own = words[cluster[:, None], pick]  # four of the cluster's words
    generic = np.array(GENERIC_WORDS)[rng.integers(0, len(GENERIC_WORDS), n)]
    stray = words[rng.integers(0, k, n), rng.integers(0, words.shape[1], n)]  # one word from anywhere
    title = np.char.add(np.char.add(np.char.capitalize(own[:, 0]), " "), np.char.capitalize(own[:, 1]))
    title = np.where(rng.random(n) < 0.5, np.char.add(np.char.add(np.char.capitalize(generic), " "), title), title)
    description = np.char.add(
        np.char.add(np.char.add("a story of ", own[:, 2]), np.char.add(" and ", own[:, 3])),
        np.char.add(" with a ", stray),
    )
    decade = rng.integers(0, len(DECADES), k)[cluster]
    decade = np.clip(decade + rng.choice([-1, 0, 0, 0, 1], n), 0, len(DECADES) - 1)
    year = np.array(DECADES)[decade] + rng.integers(0, 10, n)
    genre_index = {g: i for i, g in enumerate(GENRES)}
    theme_genres = [[genre_index[g] for g in THEMES[c][0]] for c in range(k)]
    first = np.array([tg[0] for tg in theme_genres])[cluster]
    second = np.array([tg[-1] for tg in theme_genres])[cluster]
    random_genre = rng.integers(0, len(GENRES), n)
    main = np.where(rng.random(n) < 0.85, first, random_genre)
    extra = np.where(rng.random(n) < 0.6, second, rng.integers(0, len(GENRES), n))
    third = np.where(rng.random(n) < 0.2, random_genre, -1)
    names = np.array(GENRES)
    genres = [
        " ".join(names[list(dict.fromkeys(g for g in row if g >= 0))]) for row in zip(main, extra, third, strict=True)
    ]
    frame = pd.DataFrame(
        {"item_id": np.arange(1, n + 1), "title": title, "year": year, "genres": genres, "description": description}
    )
    return frame, cluster, weight


def _kg(spec: Spec, item_cluster: np.ndarray, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Item entities linked to people and subjects drawn mostly (85%) from their cluster's own pool."""
    n, k = spec.items, spec.clusters
    linked = np.flatnonzero(rng.random(n) < spec.link_frac)
    entity = np.char.add("m.i", np.arange(1, n + 1).astype(str))
    parts = []
    for role, (relation, per_item, per_100) in enumerate(KG_ROLES):
        pool = max(2, int(round(per_100 * n / 100 / k)))  # entities of this role per cluster
        heads = np.repeat(linked, per_item)
        own = rng.random(len(heads)) < 0.85
        cluster = np.where(own, item_cluster[heads], rng.integers(0, k, len(heads)))
        tail = cluster * pool + rng.integers(0, pool, len(heads))
        parts.append(
            pd.DataFrame(
                {
                    "head_id": entity[heads],
                    "relation_id": relation,
                    "tail_id": np.char.add(f"m.r{role}_", tail.astype(str)),
                }
            )
        )
    kg = pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True)
    links = pd.DataFrame({"item_id": linked + 1, "entity_id": entity[linked]})
    return kg, links


def _activity(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: long-tailed (log-normal), at least ``min_per_user``, at most half the catalogue,
    summing to ``spec.interactions``."""
    cap = max(spec.min_per_user, min(spec.items // 2, 20 * spec.interactions // spec.users))
    weight = rng.lognormal(0.0, 1.1, spec.users)
    counts = np.full(spec.users, spec.min_per_user, dtype=np.int64)
    left = spec.interactions - counts.sum()
    while left > 0:
        room = cap - counts
        share = np.where(room > 0, weight, 0.0)
        if share.sum() == 0:
            raise ValueError(f"cannot place {spec.interactions:,} interactions at most {cap} per user")
        add = np.minimum(rng.multinomial(left, share / share.sum()), room)
        counts += add
        left = spec.interactions - counts.sum()
    return counts


def _interactions(spec: Spec, world: World, rng: np.random.Generator, path: Path) -> int:
    """Write the .inter file chunk by chunk of users; the number of rows written (exactly ``spec.interactions``)."""
    counts = _activity(spec, rng)
    order = np.argsort(world.item_cluster, kind="stable")  # items grouped by cluster
    cum = np.cumsum(world.item_weight[order])
    sorted_clusters = world.item_cluster[order]
    first = np.searchsorted(sorted_clusters, np.arange(spec.clusters), side="left")
    last = np.searchsorted(sorted_clusters, np.arange(spec.clusters), side="right")
    low = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
    high = cum[last - 1]
    global_cum = np.cumsum(world.item_weight)
    ends = np.cumsum(counts)
    written = 0
    with path.open("w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        start = 0
        while start < spec.users:
            stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + spec.chunk, side="right"))
            stop = max(stop, start + 1)
            users, items = _sample_chunk(
                np.arange(start, stop), counts[start:stop], world, rng, order, cum, low, high, global_cum
            )
            frame = _rate(users, items, world, rng)
            frame.to_csv(f, sep="\t", header=False, index=False, lineterminator="\n")
            written += len(frame)
            start = stop
    return written


def _sample_chunk(
    users: np.ndarray,
    counts: np.ndarray,
    world: World,
    rng: np.random.Generator,
    order: np.ndarray,
    cum: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    global_cum: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs, ``counts`` per user: drawn with replacement (own cluster or anywhere, by
    popularity; from the fourth round anywhere uniformly), repeats dropped, drawn again for whoever is short,
    then cut to each user's count at random."""
    n_items = len(world.item_cluster)
    have_u = np.empty(0, np.int64)
    have_i = np.empty(0, np.int64)
    need = counts.copy()
    want = counts
    for round_ in range(60):
        short = need > 0
        if not short.any():
            break
        draw = np.ceil(need[short] * 1.3).astype(np.int64) + 2
        u = np.repeat(users[short], draw)
        cl = world.user_cluster[u]
        own = rng.random(len(u)) < world.in_cluster
        r = rng.random(len(u))
        own_pos = np.minimum(np.searchsorted(cum, low[cl] + r * (high[cl] - low[cl]), side="right"), len(cum) - 1)
        any_pos = np.minimum(np.searchsorted(global_cum, r * global_cum[-1], side="right"), n_items - 1)
        if round_ >= 3:  # heavy users short after three rounds: the rest of their draws uniform over the catalogue
            any_pos = rng.integers(0, n_items, len(u))
        item = np.where(own, order[own_pos], any_pos)
        keys = np.sort(np.concatenate([have_u * n_items + have_i, u * n_items + item]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # distinct (sorting beats np.unique's hash)
        have_u, have_i = keys // n_items, keys % n_items
        got = np.bincount(have_u - users[0], minlength=len(users))
        need = np.maximum(want - got, 0)
    else:
        raise RuntimeError(f"could not draw distinct items for {int((need > 0).sum())} users")
    # cut each user's pairs to their count, keeping a random subset
    priority = rng.random(len(have_u))
    idx = np.lexsort((priority, have_u))
    have_u, have_i = have_u[idx], have_i[idx]
    starts = np.searchsorted(have_u, users)
    rank = np.arange(len(have_u)) - starts[have_u - users[0]]
    keep = rank < counts[have_u - users[0]]
    return have_u[keep], have_i[keep]


def _rate(users: np.ndarray, items: np.ndarray, world: World, rng: np.random.Generator) -> pd.DataFrame:
    """Ratings 1-5, about a point higher inside the user's cluster; timestamps over three years."""
    inside = world.user_cluster[users] == world.item_cluster[items]
    score = 3.0 + 1.1 * inside + world.item_quality[items] + world.user_bias[users] + rng.normal(0.0, 0.8, len(users))
    rating = np.clip(np.rint(score), 1, 5).astype(np.int64)
    timestamp = START_TIME + (rng.random(len(users)) * SPAN).astype(np.int64)
    return pd.DataFrame({"user_id": users + 1, "item_id": items + 1, "rating": rating, "timestamp": timestamp})


def _write(frame: pd.DataFrame, path: Path, header: list[str]) -> None:
    with path.open("w") as f:
        f.write("\t".join(header) + "\n")
        frame.to_csv(f, sep="\t", header=False, index=False, lineterminator="\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interactions", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--out", required=True, help="folder for <name>.inter/.user/.item/.kg/.link")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--in-cluster", type=float, default=0.65)
    parser.add_argument("--name", default="synthetic")
    args = parser.parse_args(argv)
    try:
        spec = Spec(
            args.interactions,
            args.users,
            args.items,
            args.seed,
            clusters=args.clusters,
            in_cluster=args.in_cluster,
            name=args.name,
        )
    except ValueError as exc:
        parser.error(str(exc))
    summary = generate(spec, args.out)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
