"""Shared fixtures: a tiny MovieLens-like dataset in both input formats, and a file editor.

The tiny dataset (12 users, 15 items, 4 genres, 60 interactions, ratings 1-5, 10 links,
6 KG triples) is small enough to read by eye and valid as written: validating it drops
nothing. Tests that need a bad input copy the fixture and change one file with
``write_variant``, so each test shows exactly which cell, row or column it breaks.

- ``tiny_recbole_dir``: RecBole atomic files with typed headers (``tiny.inter``, ``tiny.user``,
  ``tiny.item``, ``tiny.kg``, ``tiny.link``), the column names of the bundled ML-100K.
- ``tiny_csv_dir``: the same data as CSV (``interactions.csv``, ``users.csv``, ``items.csv``
  with ``"|"``-separated genres, ``kg.csv``, ``links.csv``), canonical column names.
- ``write_variant``: rewrite one of those files with a cell changed, a column renamed,
  rows dropped or appended, or only the header kept.
- ``tiny_source``: parametrized over both formats, with the file name of each table, so one
  test checks a rule on RecBole and CSV input alike.
- ``make_tiny_dir``: session-scoped writer of either format, for module- or session-scoped fixtures.

Session-wide stage outputs of the tiny data, built once and shared by every module (read-only:
a test that changes one copies it first). Each stage writes into a folder of its own:

- ``tiny_bert``: a randomly initialised BERT (hidden 32, 2 layers) with all-MiniLM-L6-v2's tokenizer,
  for tests where the encoder's quality does not matter; the path works as ``text.model``.
- ``tiny_data``: the tiny RecBole directory.
- ``tiny_snapshot``: ``extract`` on it with the default config (seed 42, 20/20/20 split).
- ``movielens_snapshot``: ``extract`` of the bundled MovieLens-100K with the default config.
- ``tiny_kg``: ``kg_embed`` of the snapshot with ``tiny_kg_config`` (PyKEEN DistMult, dim 4, 2 epochs),
  PyKEEN's checkpoints redirected to ``tiny_kg_checkpoints`` so a leaked file can be seen.
- ``tiny_text``: ``text_embed`` of the snapshot with ``tiny_bert``.
- ``tiny_bundle``: ``finetune`` on the three with ``tiny_finetune_config`` (dim 4, 2 epochs);
  ``tiny_bundle.path("bundle")`` is the bundle folder.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

GENRES = ("Action", "Comedy", "Drama", "Sci-Fi")
N_USERS, N_ITEMS, PER_USER = 12, 15, 5
BASE_TIME = 880_000_000

# Canonical tables as header + rows of strings (ids are strings, as in the files).
USERS_HEADER = ["user_id", "age", "gender", "occupation", "zip_code"]
USERS = [
    [str(u), str(17 + 4 * u), "MF"[u % 2], ("student", "engineer", "artist")[u % 3], f"{10000 + 37 * u:05d}"]
    for u in range(1, N_USERS + 1)
]
ITEMS_HEADER = ["item_id", "title", "year", "genres"]
ITEMS = [
    [
        str(i),
        "Crash, The" if i == 7 else f"Movie {i}",
        str(1980 + i),
        "|".join(dict.fromkeys((GENRES[i % 4], GENRES[(i * 3) % 4]))),
    ]  # one or two genres
    for i in range(1, N_ITEMS + 1)
]
INTERACTIONS_HEADER = ["user_id", "item_id", "rating", "timestamp"]
# User u rates 5 distinct items (3u + 2k mod 15) at increasing times; ratings cycle 1..5.
INTERACTIONS = [
    [str(u), str((3 * u + 2 * k) % N_ITEMS + 1), str((u + k) % 5 + 1), str(BASE_TIME + 1000 * u + 10 * k)]
    for u in range(1, N_USERS + 1)
    for k in range(PER_USER)
]
LINKS_HEADER = ["item_id", "entity_id"]
LINKS = [[str(i), f"m.film{i}"] for i in range(1, 11)]  # items 11-15 have no KG entity
KG_HEADER = ["head_id", "relation_id", "tail_id"]
KG = [
    ["m.film1", "film.film.genre", "m.action"],
    ["m.film2", "film.film.genre", "m.comedy"],
    ["m.film3", "film.film.directed_by", "m.person1"],
    ["m.person1", "film.director.film", "m.film4"],
    ["m.film5", "film.film.sequel", "m.film6"],
    ["m.film10", "film.film.country", "m.usa"],
]

# RecBole file suffix, typed header (ML-100K's names) and canonical name of each column.
RECBOLE = {
    "inter": (["user_id:token", "item_id:token", "rating:float", "timestamp:float"], INTERACTIONS),
    "user": (["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"], USERS),
    "item": (
        ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"],
        [[i, t, y, g.replace("|", " ")] for i, t, y, g in ITEMS],
    ),  # RecBole separates genres by spaces
    "kg": (["head_id:token", "relation_id:token", "tail_id:token"], KG),
    "link": (["item_id:token", "entity_id:token"], LINKS),
}
CSV = {
    "interactions.csv": (INTERACTIONS_HEADER, INTERACTIONS),
    "users.csv": (USERS_HEADER, USERS),
    "items.csv": (ITEMS_HEADER, ITEMS),
    "kg.csv": (KG_HEADER, KG),
    "links.csv": (LINKS_HEADER, LINKS),
}

RECBOLE_FILES = {
    "interactions": "tiny.inter",
    "users": "tiny.user",
    "items": "tiny.item",
    "kg": "tiny.kg",
    "links": "tiny.link",
}
CSV_FILES = {
    "interactions": "interactions.csv",
    "users": "users.csv",
    "items": "items.csv",
    "kg": "kg.csv",
    "links": "links.csv",
}


@dataclass(frozen=True)
class TinySource:
    """A tiny source directory and the file that holds each table."""

    directory: Path
    files: Mapping[str, str]

    def file(self, table: str) -> Path:
        return self.directory / self.files[table]


def _is_csv(path: Path) -> bool:
    return path.suffix == ".csv"


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a tiny-format file (tab-separated RecBole or comma-separated CSV)."""
    with path.open(newline="") as handle:
        if _is_csv(path):
            rows = list(csv.reader(handle))
        else:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], rows[1:]


def write_rows(path: Path, header: list[str], rows: Iterable[list[str]]) -> Path:
    """Write a file in the format its suffix implies (RecBole TSV or CSV)."""
    with path.open("w", newline="") as handle:
        if _is_csv(path):
            writer = csv.writer(handle, lineterminator="\n")
        else:
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n", escapechar="\\")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_variant(
    path: str | Path,
    *,
    cells: Mapping[tuple[int, str], str] | None = None,
    rename: Mapping[str, str] | None = None,
    drop_rows: Iterable[int] = (),
    append: Iterable[list[str]] = (),
    header_only: bool = False,
) -> Path:
    """Rewrite ``path`` with changes; columns are named without RecBole's ``:type`` suffix.

    ``cells={(row, "rating"): "7"}`` sets data row ``row`` (0-based, header excluded);
    ``rename={"rating": "score"}`` renames a column (keeping its type suffix);
    ``drop_rows`` removes data rows, ``append`` adds raw rows at the end, and
    ``header_only`` keeps the header and no rows.
    """
    path = Path(path)
    header, rows = read_rows(path)
    names = [h.split(":", 1)[0] for h in header]
    for (row, column), value in (cells or {}).items():
        rows[row][names.index(column)] = value
    for old, new in (rename or {}).items():
        j = names.index(old)
        header[j] = new + header[j][len(old) :]
    dropped = set(drop_rows)
    rows = [r for n, r in enumerate(rows) if n not in dropped] + [list(r) for r in append]
    return write_rows(path, header, [] if header_only else rows)


def make_recbole_dir(directory: Path, stem: str = "tiny") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for suffix, (header, rows) in RECBOLE.items():
        write_rows(directory / f"{stem}.{suffix}", header, rows)
    return directory


def make_csv_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (header, rows) in CSV.items():
        write_rows(directory / name, header, rows)
    return directory


@pytest.fixture
def tiny_recbole_dir(tmp_path: Path) -> Path:
    """A RecBole atomic-file directory (``tiny.inter`` ... ``tiny.link``) of the tiny data."""
    return make_recbole_dir(tmp_path / "recbole")


@pytest.fixture
def tiny_csv_dir(tmp_path: Path) -> Path:
    """The same tiny data as a CSV directory."""
    return make_csv_dir(tmp_path / "csv")


@pytest.fixture(scope="session")
def make_tiny_dir() -> Callable[[Path, str], Path]:
    """``make_tiny_dir(directory, "recbole" | "csv")`` writes the tiny data; usable from any fixture scope."""

    def make(directory: Path, fmt: str) -> Path:
        return {"recbole": make_recbole_dir, "csv": make_csv_dir}[fmt](Path(directory))

    return make


@pytest.fixture(params=["recbole", "csv"])
def tiny_source(request: pytest.FixtureRequest, tmp_path: Path) -> TinySource:
    """The tiny data in each input format in turn."""
    if request.param == "recbole":
        return TinySource(make_recbole_dir(tmp_path / "recbole"), RECBOLE_FILES)
    return TinySource(make_csv_dir(tmp_path / "csv"), CSV_FILES)


@pytest.fixture(name="write_variant")
def write_variant_fixture() -> Callable[..., Path]:
    """The ``write_variant`` helper, as a fixture so any test module can use it."""
    return write_variant


# ---------------------------------------------------------------- shared stage outputs
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Save a randomly initialised ``BertModel`` (``TINY_BERT`` sizes) with the packaged
    all-MiniLM-L6-v2 tokenizer into ``folder``: loadable by ``TextEncoder`` like any local model."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from recsys_tasks.text.encoder import resolve_model

    packaged = Path(resolve_model("packaged"))
    if not (packaged / "config.json").is_file():
        raise FileNotFoundError(f"the packaged all-MiniLM-L6-v2 (its tokenizer) is missing: {packaged}")
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (packaged / name).is_file():
            shutil.copy(packaged / name, folder / name)
    vocab_size = sum(1 for _ in (packaged / "vocab.txt").open(encoding="utf-8"))
    with torch.random.fork_rng(devices=[]):  # the weights are the same every session; global RNG untouched
        torch.manual_seed(seed)
        BertModel(BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **TINY_BERT)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random BERT's folder (see ``make_tiny_bert``): ``TextConfig(model=tiny_bert)``."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny RecBole directory, shared by the session: never change it (``tiny_recbole_dir`` is per test)."""
    return make_recbole_dir(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def tiny_snapshot(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``extract`` on the tiny RecBole data with the default config (seed 42, 20/20/20 split)."""
    from recsys_tasks.config import ExtractConfig
    from recsys_tasks.data.extract import extract

    return extract(ExtractConfig(source=str(tiny_data)), tmp_path_factory.mktemp("tiny-extract") / "snapshot")


@pytest.fixture(scope="session")
def movielens_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``extract`` of the bundled MovieLens-100K (943 users, 1682 items) with the default config."""
    from recsys_tasks.config import ExtractConfig
    from recsys_tasks.data.extract import extract

    return extract(ExtractConfig(), tmp_path_factory.mktemp("movielens") / "ml-100k")


@pytest.fixture(scope="session")
def tiny_kg_config() -> Any:
    """PyKEEN's DistMult at dimension 4 for 2 epochs on the CPU: the tiny KG stage's config."""
    from recsys_tasks.config import KGConfig

    return KGConfig(
        embedding_dim=4, epochs=2, batch_size=64, early_stopping_frequency=1, eval_fraction=0.1, device="cpu"
    )


@pytest.fixture(scope="session")
def tiny_kg_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where PyKEEN's checkpoints go while ``tiny_kg`` trains (its default is ~/.data/pykeen)."""
    return tmp_path_factory.mktemp("tiny-kg-checkpoints")


@pytest.fixture(scope="session")
def tiny_kg(
    tiny_snapshot: Any, tiny_kg_config: Any, tiny_kg_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """``kg_embed`` of ``tiny_snapshot`` with ``tiny_kg_config``; its folder's parent holds nothing else."""
    import pykeen.stoppers.early_stopping as early_stopping
    import pykeen.training.training_loop as training_loop

    from recsys_tasks.kg.embed import kg_embed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(early_stopping, "PYKEEN_CHECKPOINTS", tiny_kg_checkpoints)
        mp.setattr(training_loop, "PYKEEN_CHECKPOINTS", tiny_kg_checkpoints)
        return kg_embed(tiny_kg_config, tiny_snapshot.out_dir, tmp_path_factory.mktemp("tiny-kg") / "kg")


@pytest.fixture(scope="session")
def tiny_text(tiny_snapshot: Any, tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``text_embed`` of ``tiny_snapshot`` with ``tiny_bert`` on the CPU; its folder's parent holds nothing else."""
    from recsys_tasks.config import TextConfig
    from recsys_tasks.text.embed import text_embed

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return text_embed(
            TextConfig(model=tiny_bert, device="cpu", cache_dir=str(tmp_path_factory.mktemp("tiny-text-cache"))),
            tiny_snapshot.out_dir,
            tmp_path_factory.mktemp("tiny-text") / "text",
        )


@pytest.fixture(scope="session")
def tiny_finetune_config() -> Any:
    """The hybrid at dimension 4 for 2 epochs on the CPU, histories of up to 5 items: the tiny finetune's config."""
    from recsys_tasks.config import FinetuneConfig

    return FinetuneConfig(
        dim=4, hidden=8, epochs=2, batch_size=8, max_history=5, validation_user_frac=0.3, device="cpu"
    )


@pytest.fixture(scope="session")
def tiny_bundle(
    tiny_snapshot: Any,
    tiny_kg: Any,
    tiny_text: Any,
    tiny_bert: str,
    tiny_finetune_config: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """``finetune`` on the tiny stages: the StageResult; ``tiny_bundle.path("bundle")`` is the bundle folder."""
    from recsys_tasks.model.finetune import finetune

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return finetune(
            tiny_finetune_config,
            tiny_snapshot.out_dir,
            tiny_kg.out_dir,
            tiny_text.out_dir,
            tmp_path_factory.mktemp("tiny-finetune") / "finetune",
            tiny_bert,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Keep each phase's report on the test item (``item.rep_call``), for fixtures that act on failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterable[Path]:
    """One folder of exported text-encoder graphs for the whole session (``RECSYS_ONNX_DIR``, which
    servers started as processes inherit): the packaged encoder is exported once, not per test."""
    import os

    folder = tmp_path_factory.mktemp("onnx")
    before = os.environ.get("RECSYS_ONNX_DIR")
    os.environ["RECSYS_ONNX_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("RECSYS_ONNX_DIR", None)
    else:
        os.environ["RECSYS_ONNX_DIR"] = before


@pytest.fixture(scope="module")
def hf_offline() -> Iterator[None]:
    """The packaged model must load without the network, as scripts/env.sh runs it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        yield
