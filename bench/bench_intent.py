"""The intent benchmark: do the top 10 answers to a sentence satisfy what it asks for?

Trains nothing: loads a bundle (``--bundle``; or the seed's bundle under a `bench_quality.py
--workdir`, ``--workdir DIR --seed 42``) and asks it, as a new user with no profile and no history,
every sentence of ``bench/intent_sentences.jsonl``, with the intent gate (`recsys_tasks.intent`) and
without it (the model and fusion alone: the behaviour before the gate), in the same run. Per part
(dev, heldout) and source (hand, generated):

- satisfaction: the share of the top 10 that fit every constraint the sentence states (genres: any
  group, all of its genres; exclude: none of them; years: within), a reference item's sentence also
  asking for a genre in common with it and not the item itself; a sentence that fewer than 10
  catalogue items fit is scored against those that exist, one that none fit is left out (counted);
- jaccard: the mean Jaccard index of the top 10 over every pair of different sentences;
- parsed: the share of sentences whose parse equals what the file expects (genres, exclude, years, like).

With a workdir, ``--ndcg`` also scores the protocol's cold-user@0+text slice (NDCG@20) without the gate,
with it, and with it but genres soft (only exclusions and years gate; named genres ranked by the fusion).

    python bench/bench_intent.py --workdir DIR [--seed 42] [--ndcg] [--show N]
    python bench/bench_intent.py --bundle DIR
    python bench/bench_intent.py --regenerate --catalog ITEMS.parquet   # rewrite the generated sentences

Each line of the sentences file: {"id", "part": "dev"|"heldout", "source": "hand"|"generated", "text",
"genres": [[genre, ...], ...], "exclude": [genre, ...], "years": [first|null, last|null] | null,
"like": title | null}; genres lower case as the catalogue's, a title as the catalogue writes it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SENTENCES = Path(__file__).with_name("intent_sentences.jsonl")
K = 10
FIELDS = ("id", "part", "source", "text", "genres", "exclude", "years", "like")
PARTS = ("dev", "heldout")
SOURCES = ("hand", "generated")


# ------------------------------------------------------------------ the sentences
def load_sentences(path: Path) -> list[dict[str, Any]]:
    """Every sentence of ``path``, checked: a bad line raises a ValueError naming the line and field."""
    rows, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        if row["id"] in seen:
            raise ValueError(f"{where}: field id: {row['id']!r} repeats")
        seen.add(row["id"])
        if row["part"] not in PARTS or row["source"] not in SOURCES:
            raise ValueError(f"{where}: field part/source: {row['part']!r}/{row['source']!r}")
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise ValueError(f"{where}: field text: a non-empty string")
        if not all(isinstance(g, list) and g and all(isinstance(x, str) for x in g) for g in row["genres"]):
            raise ValueError(f"{where}: field genres: a list of non-empty lists of genres")
        if not all(isinstance(x, str) for x in row["exclude"]):
            raise ValueError(f"{where}: field exclude: a list of genres")
        years = row["years"]
        if years is not None and not (
            isinstance(years, list) and len(years) == 2 and all(y is None or isinstance(y, int) for y in years)
        ):
            raise ValueError(f"{where}: field years: [first, last] (each a year or null) or null")
        rows.append(row)
    return rows


def generate(items: pd.DataFrame, seed: int = 0, n: int = 170) -> list[dict[str, Any]]:
    """Sentences built from the catalogue's own metadata (genre names as written, decades and years that
    occur, titles of items), with the constraints they were built from."""
    rng = random.Random(seed)
    genres = sorted({g for gs in items["genres"].fillna("") for g in str(gs).split("|") if g and g != "unknown"})
    years = pd.to_numeric(items["year"], errors="coerce").dropna().astype(int)
    decades = sorted({y // 10 * 10 for y in years if (years // 10 * 10 == y // 10 * 10).sum() >= 20})
    titled = items[items["title"].fillna("").str.len() > 0]
    plain = titled[~titled["title"].str.contains(r"[(,:]", regex=True)].head(400)  # a title as people write it
    templates = [
        lambda: (f"{a} movies", [[a.lower()]], [], None, None),
        lambda: (f"{a} films from the {d % 100:02d}s", [[a.lower()]], [], [d, d + 9], None),
        lambda: (f"{a} from the {d}s", [[a.lower()]], [], [d, d + 9], None),
        lambda: (f"no {a}, I want {b}", [[b.lower()]], [a.lower()], None, None),
        lambda: (f"{b} but nothing {a}", [[b.lower()]], [a.lower()], None, None),
        lambda: (f"{a} made before {y}", [[a.lower()]], [], [None, y - 1], None),
        lambda: (f"{a} released after {y}", [[a.lower()]], [], [y + 1, None], None),
        lambda: (f"I like {a} and {b} movies.", [[a.lower()], [b.lower()]], [], None, None),
        lambda: (f"{a} or {b}", [[a.lower()], [b.lower()]], [], None, None),
        lambda: (f"something like {t}", [], [], None, t),
        lambda: (f"movies similar to {t}", [], [], None, t),
        lambda: (f"a {a} movie like {t}", [[a.lower()]], [], None, t),
    ]
    out, texts = [], set()
    while len(out) < n:
        a, b = rng.sample(genres, 2)
        d, y, t = rng.choice(decades), int(rng.choice(years.tolist())), str(rng.choice(plain["title"].tolist()))
        text, g, e, yr, like = rng.choice(templates)()
        if text in texts:
            continue
        texts.add(text)
        out.append({"text": text, "genres": g, "exclude": e, "years": yr, "like": like})
    return out


def regenerate(path: Path, items: pd.DataFrame) -> None:
    """Rewrite the generated sentences of ``path`` (a third held out, by a seeded draw), keep the hand-written ones."""
    kept = [r for r in load_sentences(path) if r["source"] == "hand"] if path.exists() else []
    rng = random.Random(1)
    rows = kept + [
        {"id": f"g{i:03d}", "part": "heldout" if rng.random() < 1 / 3 else "dev", "source": "generated", **r}
        for i, r in enumerate(generate(items), start=1)
    ]
    path.write_text("".join(json.dumps({f: r[f] for f in FIELDS}) + "\n" for r in rows))
    print(f"{path}: {len(kept)} hand-written, {len(rows) - len(kept)} generated")


# ------------------------------------------------------------------ the scores
class Catalogue:
    """The genres, years and titles of a bundle's catalogue, to check answers against."""

    def __init__(self, catalog: pd.DataFrame):
        self.ids = catalog["item_id"].astype(str).tolist()
        self.row = {i: r for r, i in enumerate(self.ids)}
        self.genres = [frozenset(g.lower() for g in str(gs or "").split("|") if g) for gs in catalog["genres"]]
        self.years = pd.to_numeric(catalog["year"], errors="coerce").to_numpy(np.float64)
        self.by_title: dict[str, int] = {}
        for r, t in enumerate(catalog["title"].fillna("").astype(str)):
            self.by_title.setdefault(t.strip().lower(), r)

    def reference(self, sentence: dict) -> int | None:
        if not sentence["like"]:
            return None
        row = self.by_title.get(sentence["like"].strip().lower())
        if row is None:
            raise ValueError(f"sentence {sentence['id']}: field like: no catalogue title {sentence['like']!r}")
        return row

    def fits(self, sentence: dict) -> np.ndarray:
        """(n,) bool: the rows that satisfy every constraint of ``sentence``."""
        ok = np.ones(len(self.ids), bool)
        if sentence["genres"]:
            ok &= np.array([any(set(g) <= gs for g in sentence["genres"]) for gs in self.genres])
        if sentence["exclude"]:
            ok &= np.array([not (set(sentence["exclude"]) & gs) for gs in self.genres])
        if sentence["years"]:
            first, last = sentence["years"]
            ok &= np.isfinite(self.years)
            if first is not None:
                ok &= self.years >= first
            if last is not None:
                ok &= self.years <= last
        ref = self.reference(sentence)
        if ref is not None:
            ok &= np.array([bool(self.genres[ref] & gs) for gs in self.genres])
            ok[ref] = False
        return ok


def satisfaction(answers: Sequence[list[str]], sentences: Sequence[dict], cat: Catalogue) -> tuple[list[float], int]:
    """Per answerable sentence the share of its top K that fit (against min(K, fitting items)); and how
    many sentences no catalogue item fits."""
    out, unanswerable = [], 0
    for items, sentence in zip(answers, sentences):
        ok = cat.fits(sentence)
        n_fit = int(ok.sum())
        if n_fit == 0:
            unanswerable += 1
            continue
        hits = sum(bool(ok[cat.row[i]]) for i in items[:K])
        out.append(min(1.0, hits / min(K, n_fit)))
    return out, unanswerable


def mean_jaccard(answers: Sequence[list[str]]) -> float:
    """The mean Jaccard index of the top K over every pair of answers."""
    sets = [set(a[:K]) for a in answers]
    pairs = [len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2) if a | b]
    return float(np.mean(pairs)) if pairs else float("nan")


def parsed_right(intent: dict, sentence: dict, cat: Catalogue) -> bool:
    """Whether the response's ``intent`` is what the sentence expects."""
    ref = cat.reference(sentence)
    like = [x["item_id"] for x in intent.get("like", [])]
    return (
        {frozenset(g) for g in intent.get("genres", [])} == {frozenset(g) for g in sentence["genres"]}
        and set(intent.get("exclude", [])) == set(sentence["exclude"])
        and (intent.get("years") or None) == (sentence["years"] or None)
        and like == ([cat.ids[ref]] if ref is not None else [])
    )


def answer(rec, sentences: Sequence[dict], gate: bool) -> list[dict]:
    rec.intent_gate = gate
    try:
        return rec.recommend([{"request_id": s["id"], "text": s["text"], "k": K} for s in sentences])
    finally:
        rec.intent_gate = True


def report(rec, sentences: list[dict], show: int = 0) -> pd.DataFrame:
    """One row per (part, source) and ranker: sentences, unanswerable, satisfaction, jaccard, parsed."""
    from recsys_tasks.intent.reader import SoftWeights

    cat = Catalogue(rec.bundle.catalog)
    fitted = rec.intents.weights  # the bundle's (fitted reference weights, docs/decisions/0024)
    rankers = [("without gate", False, fitted), ("with gate", True, fitted)]
    if fitted != SoftWeights():
        rankers.append(("with gate, default weights", True, SoftWeights()))
    responses = {}
    for name, gate, weights in rankers:
        rec.intents.weights = weights
        responses[name] = answer(rec, sentences, gate)
    rec.intents.weights = fitted
    gated = responses["with gate"]
    rows = []
    groups = [(p, s) for p in PARTS for s in (*SOURCES, "all")]
    for part, source in groups:
        chosen = [
            i for i, s in enumerate(sentences) if s["part"] == part and (source == "all" or s["source"] == source)
        ]
        if not chosen:
            continue
        for ranker, gate, _ in rankers:
            answers = [[x["item_id"] for x in responses[ranker][i]["items"]] for i in chosen]
            sat, unanswerable = satisfaction(answers, [sentences[i] for i in chosen], cat)
            parsed = (
                np.mean([parsed_right(gated[i]["intent"], sentences[i], cat) for i in chosen]) if gate else float("nan")
            )
            rows.append(
                {
                    "part": part,
                    "source": source,
                    "ranker": ranker,
                    "sentences": len(chosen),
                    "unanswerable": unanswerable,
                    "satisfaction": float(np.mean(sat)) if sat else float("nan"),
                    "jaccard": mean_jaccard(answers),
                    "parsed": parsed,
                }
            )
    if show:
        dev = [i for i, s in enumerate(sentences) if s["part"] == "dev"]
        misses = [i for i in dev if not parsed_right(gated[i]["intent"], sentences[i], cat)]
        for i in misses[:show]:
            expected = {f: sentences[i][f] for f in ("genres", "exclude", "years", "like")}
            print(f"- {sentences[i]['text']!r}\n    expected {expected}\n    parsed   {gated[i]['intent']}")
        for i in dev:
            answers = [x["item_id"] for x in gated[i]["items"]]
            sat, _ = satisfaction([answers], [sentences[i]], cat)
            if sat and sat[0] < 0.8 and i not in misses:
                got = [(x["title"][:20], x["year"], "/".join(x["genres"])) for x in gated[i]["items"][:5]]
                print(f"- satisfaction {sat[0]:.1f}: {sentences[i]['text']!r}: {gated[i]['intent']}\n    {got}")
    return pd.DataFrame(rows)


def text_ndcg(rec, workdir: Path, threshold: float) -> pd.DataFrame:
    """NDCG@20 of the cold-user@0+text slice without the gate, with it (a stated taste's genres soft), with
    stated tastes hard too, and with every genre soft (only exclusions and years gate)."""
    from recsys_tasks.config import PipelineConfig
    from recsys_tasks.data.dataset import Dataset
    from recsys_tasks.data.split import Split
    from recsys_tasks.evaluation.table import MODEL, evaluate_slices
    from recsys_tasks.protocol.slices import build_slices

    snapshot = workdir / "extract"
    cfg = PipelineConfig().evaluate
    slices = [
        s
        for s in build_slices(Dataset.load(snapshot), Split.load(snapshot), cfg, threshold)
        if s.name == "cold-user@0+text"
    ]
    rows = []
    variants = (
        ("without gate", False, True, True),
        ("with gate", True, True, True),
        ("gate, stated tastes hard", True, True, False),
        ("gate, every genre soft", True, False, False),
    )
    for name, gate, hard, soft_taste in variants:
        rec.intent_gate, rec.intents.hard_genres, rec.intents.soft_taste = gate, hard, soft_taste
        frame = evaluate_slices(slices, {}, rec, cfg.k)
        row = frame[frame["ranker"] == MODEL].iloc[0]
        rows.append({"ranker": name, "ndcg@20": row["ndcg@20"], "ci95": row["ndcg_ci95"], "users": row["evaluated"]})
    rec.intent_gate, rec.intents.hard_genres, rec.intents.soft_taste = True, True, True
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", help="a bundle directory")
    parser.add_argument("--workdir", help="a bench_quality.py --workdir: its seed's bundle (and, --ndcg, split)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sentences", default=str(SENTENCES))
    parser.add_argument("--part", choices=PARTS, action="append", help="only these parts (default both)")
    parser.add_argument("--ndcg", action="store_true", help="also the +text slice's NDCG@20 (needs --workdir)")
    parser.add_argument("--show", type=int, default=0, help="print up to N dev sentences parsed unlike expected")
    parser.add_argument("--regenerate", action="store_true", help="rewrite the generated sentences from --catalog")
    parser.add_argument("--catalog", help="items.parquet of a snapshot (with --regenerate)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.regenerate:
        if not args.catalog:
            parser.error("--regenerate needs --catalog")
        regenerate(Path(args.sentences), pd.read_parquet(args.catalog))
        return
    from recsys_tasks.model.recommender import Recommender

    seed_dir = Path(args.workdir) / f"seed{args.seed}" if args.workdir else None
    bundle = Path(args.bundle) if args.bundle else (seed_dir / "variant0" / "finetune" / "bundle" if seed_dir else None)
    if bundle is None or not bundle.is_dir():
        parser.error(f"no bundle: give --bundle or a bench_quality.py --workdir ({bundle})")
    rec = Recommender.load(bundle)
    sentences = load_sentences(Path(args.sentences))
    if args.part:
        sentences = [s for s in sentences if s["part"] in args.part]
    table = report(rec, sentences, args.show)
    pd.set_option("display.width", 200)
    print(f"\n## intent benchmark: {len(sentences)} sentences, top {K}, bundle {bundle}, {rec.intents.weights}\n")
    print(table.round(4).to_markdown(index=False))
    if args.ndcg:
        if seed_dir is None:
            parser.error("--ndcg needs --workdir")
        threshold = float(rec.meta.get("positive_threshold", 4.0))
        print(f"\n## cold-user@0+text, seed {args.seed}\n")
        print(text_ndcg(rec, seed_dir, threshold).round(4).to_markdown(index=False))


if __name__ == "__main__":
    sys.exit(main())
