"""Privacy (issue 22, item 9): a registered run's whole MLflow record, and its logs, hold no raw personal data.

One real pipeline run on a seeded sample of the bundled MovieLens-100K (conftest's tiny BERT, the tiny
dims of ``TINY_PIPELINE``) registers into a SQLite store under ``tmp_path``. Then every run's params,
tags, metric names and run name, every registered model, version and tag, every row of every table of
the store, every artifact file under the artifact root (the run's and the registered model's), and
every log record of the run are searched for:

- a zip code of the users file (a 5-character token);
- a user id where one is written: ``user 12``, ``user_id: "12"``, ``users: ["12", ...``, a JSON key
  naming users, a ``user_id`` column of a CSV or Parquet table;
- a profile sentence or a stated-taste sentence (the texts the encoder reads).

The registered bundle's known-user index is what serving needs (docs/security.md, "Privacy"): user ids
in ``users.parquet``, ``histories.parquet`` and ``history_index/users.npy``, and the distinct encoded
sentences in ``texts.parquet``. Those files are checked for what they must not hold (zip codes, exact
ages, rating times), and the registered model answers known users as finetune's own bundle does.
The detectors are shown to fire on the raw snapshot and the unstripped bundle, so the search can fail.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tiny_pipeline import TINY_PIPELINE

import recsys_tasks
from recsys_tasks.config import PipelineConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.pipeline import run_pipeline
from recsys_tasks.registry.privacy import AGE_CODES, KEY_ENV, pseudonym
from recsys_tasks.text.texts import profile_text, taste_sentences

SAMPLE_USERS = 80
# The registered bundle's known-user index: user ids (and, in texts.parquet, sentences) that serving needs.
KNOWN_USER_INDEX = ("bundle/users.parquet", "bundle/histories.parquet", "bundle/history_index/users.npy")
ENCODED_SENTENCES = ("bundle/texts.parquet",)
TEXT_SUFFIXES = (".json", ".csv", ".md", ".yaml", ".yml", ".txt", ".html", ".svg", ".log", ".py", ".j2", ".toml")
TEXT_NAMES = ("MLmodel",)

ZIP_TOKEN = re.compile(r"(?<![\w.])[A-Za-z0-9]{5}(?![\w.])")
USER_ID = re.compile(r"(?<![a-z])user(?:[ _-]?id)?[\s\"':=]{1,4}(\d+)\b", re.IGNORECASE)
USER_LIST = re.compile(r"(?<![a-z])users?(?:[ _-]?ids?)?[\"']?\s*[:=]?\s*[\[(]\s*[\"']?(\d+)(?!\w)", re.IGNORECASE)
USER_KEY = re.compile(r"user", re.IGNORECASE)
USER_COLUMN = re.compile(r"^(user|user_?id|uid)$", re.IGNORECASE)


@dataclass(frozen=True)
class Personal:
    """The raw personal data of the bundled users file: what must not reach MLflow or the logs."""

    user_ids: frozenset[str]
    zips: frozenset[str]
    sentences: tuple[str, ...]  # every user's profile sentence and every stated-taste sentence

    def in_text(self, text: str, where: str) -> list[str]:
        """Each piece of personal data found in ``text``, named with ``where``."""
        found = [f"{where}: zip code {t!r}" for t in ZIP_TOKEN.findall(text) if t in self.zips]
        for pattern in (USER_ID, USER_LIST):
            found += [
                f"{where}: user id {m.group(1)!r} in {m.group(0)!r}"
                for m in pattern.finditer(text)
                if m.group(1) in self.user_ids
            ]
        return found + [f"{where}: sentence {s!r}" for s in self.sentences if s in text]

    def in_value(self, key: str, value: Any, where: str) -> list[str]:
        """Personal data in a JSON value, and user ids as strings under any key that names users (counts of
        users are numbers)."""
        found: list[str] = []
        if isinstance(value, dict):
            for k, v in value.items():
                found += self.in_value(str(k), v, where)
        elif isinstance(value, list):
            for v in value:
                found += self.in_value(key, v, where)
        elif isinstance(value, str):
            found += self.in_text(value, f"{where} [{key}]")
            if USER_KEY.search(key) and value in self.user_ids:
                found.append(f"{where}: user id {value!r} under key {key!r}")
        return found

    def in_frame(self, frame: pd.DataFrame, where: str, ids_allowed: bool, sentences_allowed: bool) -> list[str]:
        """Personal data in a table: zip codes in any cell, user ids in a user column, sentences in any cell."""
        found = []
        for column in frame.columns:
            textual = pd.api.types.is_string_dtype(frame[column]) or frame[column].dtype == object
            values = set(frame[column].dropna().astype(str)) if textual else set()
            if values & self.zips:
                found.append(f"{where}: zip codes in column {column!r}, e.g. {sorted(values & self.zips)[:3]}")
            if USER_COLUMN.match(str(column)) and not ids_allowed:
                ids = set(frame[column].dropna().astype(str)) & self.user_ids
                if ids:
                    found.append(f"{where}: user ids in column {column!r}, e.g. {sorted(ids)[:3]}")
            if not sentences_allowed and values & set(self.sentences):
                found.append(
                    f"{where}: sentences in column {column!r}, e.g. {sorted(values & set(self.sentences))[:2]}"
                )
        return found


def personal_data(users: pd.DataFrame, genres: Iterable[str]) -> Personal:
    rows = users.to_dict("records")
    return Personal(
        frozenset(users["user_id"].astype(str)),
        frozenset(str(z) for z in users["zip_code"].dropna() if str(z).strip()),
        tuple(dict.fromkeys([profile_text(r) for r in rows] + taste_sentences(sorted(set(genres))))),
    )


def scan_file(path: Path, relative: str, personal: Personal) -> list[str]:
    """Personal data in one artifact file (text, JSON, CSV, Parquet, NumPy); other binaries are not read."""
    ids_allowed = relative.endswith(KNOWN_USER_INDEX)
    sentences_allowed = relative.endswith(ENCODED_SENTENCES)
    found: list[str] = []
    if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
        text = path.read_text(encoding="utf-8", errors="replace")
        found += personal.in_text(text, relative)
        if path.suffix == ".json":
            found += personal.in_value("", json.loads(text), relative)
        if path.suffix == ".csv":
            found += personal.in_frame(pd.DataFrame(list(csv.DictReader(io.StringIO(text)))), relative, False, False)
    elif path.suffix == ".parquet":
        found += personal.in_frame(pd.read_parquet(path), relative, ids_allowed, sentences_allowed)
    elif path.suffix in (".npy", ".npz"):
        loaded = np.load(path, allow_pickle=False)
        arrays = dict(loaded) if path.suffix == ".npz" else {path.stem: loaded}
        for name, array in arrays.items():
            if array.dtype.kind in "US":
                values = set(array.astype(str).ravel().tolist())
                if values & personal.zips:
                    found.append(f"{relative}[{name}]: zip codes")
                if "user" in name and values & personal.user_ids and not ids_allowed:
                    found.append(f"{relative}[{name}]: user ids")
    return found


def walk_files(root: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path, path.relative_to(root).as_posix()


class Records(logging.Handler):
    """Every log record of the run, formatted with its arguments (what a log file would hold)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")


@dataclass(frozen=True)
class Run:
    root: Path
    summary: dict[str, Any]
    logs: list[str]
    personal: Personal
    cfg: PipelineConfig

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str, movielens_snapshot: Any) -> Run:
    root = tmp_path_factory.mktemp("privacy")
    cfg = PipelineConfig().with_overrides(
        {**TINY_PIPELINE, "extract.sample_users": SAMPLE_USERS, "text.model": tiny_bert}
    )
    full = Dataset.load(movielens_snapshot.out_dir)  # every user of the bundled users file
    personal = personal_data(full.users, [g for gs in full.genre_lists() for g in gs])
    records, logger = Records(), logging.getLogger()
    before = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("MLFLOW_TRACKING_URI", raising=False)
            mp.setenv("RECSYS_WORKDIR", str(root))
            mp.setenv("HF_HUB_OFFLINE", "1")
            mp.chdir(root)
            summary = run_pipeline(cfg, root, run_id="privacy")
    finally:
        logger.removeHandler(records)
        logger.setLevel(before)
    return Run(root, summary, records.lines, personal, cfg)


@pytest.mark.slow
def test_the_tracking_record_holds_no_personal_data(run: Run) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=run.uri, registry_uri=run.uri)
    found, n_runs = [], 0
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        found += run.personal.in_text(f"experiment: {experiment.name}", "experiment name")
        for r in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL):
            n_runs += 1
            where = f"run {r.info.run_id}"
            found += run.personal.in_text(f"run: {r.info.run_name}", f"{where} name")
            for kind, pairs in (("param", r.data.params), ("tag", r.data.tags), ("metric", r.data.metrics)):
                for key, value in pairs.items():
                    found += run.personal.in_text(f"{key}: {value}", f"{where} {kind}")  # "user_id: 12"
    versions = 0
    for model in client.search_registered_models():
        found += run.personal.in_text(f"{model.name} {model.tags} {model.description or ''}", "registered model")
        for version in client.search_model_versions(f"name = '{model.name}'"):
            versions += 1
            found += run.personal.in_text(f"{version.tags} {version.description or ''}", f"version {version.version}")
    assert n_runs == 1 and versions == 1, (n_runs, versions)
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_every_row_of_the_store_holds_no_personal_data(run: Run) -> None:
    """Whatever the client does not show (logged models' params, inputs, traces): every cell of every table."""
    found, cells = [], 0
    with sqlite3.connect(run.root / "mlflow.db") as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                cells += len(row)
                found += run.personal.in_text("\t".join(str(c) for c in row), f"table {table}")
    assert "params" in tables and cells > 1000, (tables, cells)
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_every_artifact_file_holds_no_personal_data(run: Run) -> None:
    """The run's artifacts and the registered model's files, under the store's artifact root."""
    artifacts = run.root / "mlartifacts"
    files = list(walk_files(artifacts))
    names = {relative.split("/")[-1] for _, relative in files}
    assert {"metrics.json", "report.json", "users.parquet", "histories.parquet", "fusion.json"} <= names, names
    found, package = [], Path(recsys_tasks.__file__).parent
    for path, relative in files:
        found += run.personal.in_text(relative, "artifact path")
        code = relative.split("/code/recsys_tasks/", 1)
        if len(code) == 2:  # the package's own source (its docstrings cite "user 80"): the repository's, byte for byte
            if path.suffix != ".pyc":
                assert path.read_bytes() == (package / code[1]).read_bytes(), relative
            continue
        found += scan_file(path, relative, run.personal)
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_the_logs_of_the_run_hold_no_personal_data(run: Run) -> None:
    assert any("registered" in line for line in run.logs), run.logs[-5:]  # the register stage's log was caught
    found = [f for n, line in enumerate(run.logs) for f in run.personal.in_text(line, f"log record {n}")]
    assert not found, "\n".join(found)


def _registered_bundle(run: Run) -> Path:
    [bundle] = [p.parent for p in (run.root / "mlartifacts").rglob("bundle.json")]
    return bundle


@pytest.mark.slow
def test_the_registered_known_user_index_is_stripped(run: Run) -> None:
    """What serving keeps of its known users: ids, age bands, gender, occupation, the order of their ratings."""
    bundle = _registered_bundle(run)
    users = pd.read_parquet(bundle / "users.parquet")
    assert len(users) == SAMPLE_USERS
    assert (users["zip_code"].fillna("") == "").all()
    assert set(users["age"].dropna().astype(int)) <= set(AGE_CODES.values())
    histories = pd.read_parquet(bundle / "histories.parquet")
    per_user = histories.groupby("user_id")["timestamp"]
    assert (per_user.min() == 0).all() and (per_user.max() + 1 == per_user.size()).all()
    times, offsets = (np.load(bundle / "history_index" / f"{n}.npy") for n in ("timestamps", "offsets"))
    assert all((times[a:b] == np.arange(b - a)).all() for a, b in zip(offsets[:-1], offsets[1:]))
    excluded = json.loads((bundle / "fusion.json").read_text())["excluded_users"]
    assert excluded and all(re.fullmatch(r"[0-9a-f]{16}", e) for e in excluded)


@pytest.mark.slow
def test_the_registered_model_answers_known_users_as_the_trained_bundle_does(run: Run) -> None:
    from recsys_tasks.model.recommender import Recommender
    from recsys_tasks.registry.store import load_recommender

    registered = load_recommender(f"models:/{run.cfg.registry.model_name}/1", uri=run.uri)
    trained = Recommender.load(Path(run.summary["run_dir"]) / "finetune" / "bundle")
    users = trained.bundle.users["user_id"].astype(str).tolist()[:40]
    requests = [{"request_id": u, "user_id": u} for u in users] + [
        {
            "request_id": "new",
            "profile": {"age": 33, "gender": "F", "occupation": "writer"},
            "text": "I like Drama movies.",
        }
    ]
    got, want = registered.recommend(requests, k=10), trained.recommend(requests, k=10)
    assert [r["items"] for r in got] == [r["items"] for r in want]


@pytest.mark.slow
def test_the_search_finds_personal_data_where_it_is(run: Run) -> None:
    """The detectors fire on the raw snapshot, on finetune's unstripped bundle and on a log line naming a user."""
    run_dir = Path(run.summary["run_dir"])
    raw_users = scan_file(run_dir / "extract" / "users.parquet", "extract/users.parquet", run.personal)
    assert any("zip codes" in f for f in raw_users) and any("user ids" in f for f in raw_users), raw_users
    fusion = scan_file(run_dir / "finetune" / "bundle" / "fusion.json", "finetune/fusion.json", run.personal)
    assert any("user id" in f for f in fusion), fusion
    user = sorted(run.personal.user_ids, key=int)[5]
    zip_code = sorted(run.personal.zips)[0]
    for line in (f"scoring user {user}", f"{{'user_id': '{user}'}}", f"excluded users: ['{user}', 'x']"):
        assert run.personal.in_text(line, "line"), line
    assert run.personal.in_text(f"moved to {zip_code} today", "line")
    assert run.personal.in_text(run.personal.sentences[0], "line")
    assert not run.personal.in_text("cold-user@5/users: 30.0, users 150", "counts")


def test_pseudonyms_are_keyed_and_stable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "one key")
    first = pseudonym("186")
    assert re.fullmatch(r"[0-9a-f]{16}", first) and pseudonym("186") == first and pseudonym("187") != first
    monkeypatch.setenv(KEY_ENV, "another key")
    assert pseudonym("186") != first


def test_a_sql_source_reaches_mlflow_with_its_password_masked() -> None:
    """The config logged as params and config.yaml shows a database source without its password."""
    from recsys_tasks.config import PipelineConfig
    from recsys_tasks.registry.register import _flatten, _without_secrets

    cfg = PipelineConfig().with_overrides(["extract.source=postgresql://etl:s3cret-pw@db.internal:5432/shop"])
    logged = _flatten(_without_secrets(cfg.to_dict()))
    assert "s3cret-pw" not in repr(logged)
    assert logged["extract.source"] == "postgresql://etl:***@db.internal:5432/shop"
    assert cfg.extract.source.endswith("s3cret-pw@db.internal:5432/shop")  # the run itself keeps it
    files = PipelineConfig().with_overrides(["extract.source=bundled"])
    assert _flatten(_without_secrets(files.to_dict()))["extract.source"] == "bundled"
