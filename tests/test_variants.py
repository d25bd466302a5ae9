"""Champion against challenger online: the stable split (`serving.variants`), the API serving both
aliases of a real registry with each response tagged, the fall-back to the champion, the exposure log
(pseudonymised, rotated), and the comparison report (`report.variants`, ``recsys compare-variants``)
on a hand-made log whose figures are worked out by hand below.

The registry is trained once for the module (`run_pipeline` on the tiny data, tiny dims): version 1
is the champion; version 2 is registered from the same files (the challenger when the alias is set);
version 3 points at a model that does not exist (a challenger that cannot be loaded).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from tiny_pipeline import TINY_PIPELINE

from recsys_tasks.cli import main
from recsys_tasks.config import PipelineConfig
from recsys_tasks.pipeline import run_pipeline
from recsys_tasks.registry.privacy import KEY_ENV, pseudonym
from recsys_tasks.registry.store import CHALLENGER
from recsys_tasks.report import variants as report
from recsys_tasks.serving.app import ServeSettings, create_app
from recsys_tasks.serving.variants import KEY_CHECK, ExposureLog, ServedCounts, bucket, variant_of

NAME = PipelineConfig().registry.model_name
KEY = "test-pseudonym-key"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MLFLOW_TRACKING_URI",
        "RECSYS_WORKDIR",
        "RECSYS_API_KEY",
        "RECSYS_CORS_ORIGINS",
        "RECSYS_CHALLENGER_SHARE",
        "RECSYS_EXPOSURE_LOG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(KEY_ENV, KEY)


# ---------------------------------------------------------------- the split
def test_the_hash_of_an_id_is_pinned_so_users_keep_their_variant_across_releases() -> None:
    """Known answers: a change of salt or hash would silently move users between the variants."""
    assert bucket("user0") == 0.4833662052767681
    assert bucket("42") == 0.713787723723954
    assert bucket("") == 0.2672471890247515


def test_the_split_matches_the_share_over_10k_users_and_is_stable() -> None:
    ids = [f"user{i}" for i in range(10_000)]
    for share, known in ((0.1, 1002), (0.3, 2979), (0.5, 5040)):
        picked = [variant_of({"request_id": "r", "user_id": u}, share) == "challenger" for u in ids]
        assert sum(picked) == known  # the known answer
        assert abs(sum(picked) / len(ids) - share) < 0.015  # 3 standard deviations of a fair coin at 10k
        again = [variant_of({"request_id": "other", "user_id": u}, share) == "challenger" for u in ids]
        assert again == picked  # the user decides, not the request
    at_10 = {u for u in ids if variant_of({"user_id": u}, 0.1) == "challenger"}
    at_30 = {u for u in ids if variant_of({"user_id": u}, 0.3) == "challenger"}
    assert at_10 < at_30  # a larger share only moves users to the challenger


def test_share_zero_and_one_and_requests_without_a_user() -> None:
    ids = [f"user{i}" for i in range(1000)]
    assert {variant_of({"request_id": "r", "user_id": u}, 0.0) for u in ids} == {"champion"}
    assert {variant_of({"request_id": "r", "user_id": u}, 1.0) for u in ids} == {"challenger"}
    # no user: the request id decides; neither: the champion
    assert variant_of({"request_id": "user0"}, 0.49) == variant_of({"request_id": "x", "user_id": "user0"}, 0.49)
    assert variant_of({"request_id": "user0"}, 0.48) == "champion"  # bucket 0.4834 >= 0.48
    assert variant_of({"request_id": "user0"}, 0.49) == "challenger"
    assert variant_of({"request_id": ""}, 1.0) == variant_of({}, 1.0) == "champion"


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan, math.inf, True, "0.5"])
def test_a_share_outside_0_to_1_is_refused_naming_it(share: Any) -> None:
    with pytest.raises(ValueError, match="challenger_share must be a number from 0 to 1"):
        ServeSettings(challenger_share=share)


def test_the_share_and_the_exposure_log_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServeSettings.from_env().challenger_share == 0.0 and ServeSettings.from_env().exposure_log is None
    monkeypatch.setenv("RECSYS_CHALLENGER_SHARE", "0.25")
    monkeypatch.setenv("RECSYS_EXPOSURE_LOG", "/var/log/recsys/exposures.jsonl")
    settings = ServeSettings.from_env()
    assert (settings.challenger_share, settings.exposure_log) == (0.25, "/var/log/recsys/exposures.jsonl")
    monkeypatch.setenv("RECSYS_CHALLENGER_SHARE", "a quarter")
    with pytest.raises(ValueError, match="RECSYS_CHALLENGER_SHARE must be a number from 0 to 1, got 'a quarter'"):
        ServeSettings.from_env()
    monkeypatch.setenv("RECSYS_CHALLENGER_SHARE", "2")
    with pytest.raises(ValueError, match="challenger_share must be a number from 0 to 1"):
        ServeSettings.from_env()


def test_served_counts_per_variant_and_version() -> None:
    counts = ServedCounts()
    counts.add("champion", "1", 3)
    counts.add("challenger", "2")
    counts.add("champion", "4")
    assert counts.snapshot() == {
        "champion": {"served": 4, "by_version": {"1": 3, "4": 1}},
        "challenger": {"served": 1, "by_version": {"2": 1}},
    }


# ---------------------------------------------------------------- the exposure log
def _response(variant: str, items: list[str], version: str = "1") -> dict[str, Any]:
    return {"request_id": "r", "items": [{"item_id": i} for i in items], "model_version": version, "variant": variant}


def test_the_exposure_log_holds_pseudonyms_not_user_ids_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "exposures.jsonl"
    log = ExposureLog(path, max_bytes=2_000, backups=2)
    users = [f"alice.smith-{i}@example.org" for i in range(60)]
    for user in users:
        log.write([{"request_id": f"req-{user}", "user_id": user}], [_response("challenger", ["7", "9"], "2")])
    log.write([{"request_id": "anonymous"}], [_response("champion", ["1"])])
    log.close()
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == [
        "exposures.jsonl",
        "exposures.jsonl.1",
        "exposures.jsonl.2",
    ]  # the oldest dropped
    assert all(f.stat().st_size <= 2_000 for f in files)
    text = "".join(f.read_text() for f in files)
    assert "alice" not in text and "example.org" not in text and "req-" not in text
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[-1]["user"] is None and records[-1]["variant"] == "champion"
    last = records[-2]
    assert last["user"] == pseudonym(users[-1]) and len(last["user"]) == 16
    assert (last["variant"], last["model_version"], last["items"]) == ("challenger", "2", ["7", "9"])
    assert last["key"] == pseudonym(KEY_CHECK)


def test_the_report_recognises_the_logs_key_check() -> None:
    assert report.KEY_CHECK == KEY_CHECK  # the report may not import serving: the same constant twice


# ---------------------------------------------------------------- the comparison, by hand
def _exposure(ts: float, variant: str, user: str | None, items: list[str], key: str | None = None) -> str:
    return json.dumps(
        {
            "ts": ts,
            "variant": variant,
            "model_version": "1" if variant == "champion" else "2",
            "user": pseudonym(user) if user else None,
            "items": items,
            "key": key or pseudonym(KEY_CHECK),
        }
    )


HAND_EXPOSURES = [  # ts, variant, user, items (written under the test's key by `hand_exposures`)
    (100, "champion", "a", ["i1", "i2", "i3"]),
    (100, "champion", "b", ["i1", "i2"]),
    (100, "champion", "c", ["i4"]),
    (400, "champion", "c", ["i5"]),
    (100, "champion", "d", ["i1"]),
    (100, "challenger", "e", ["i1", "i2", "i3"]),
    (100, "challenger", "f", ["i7"]),
    (100, "champion", "g", ["i1"]),  # g: answered by both (the share changed): left out
    (200, "challenger", "g", ["i1"]),
    (100, "champion", None, ["i1"]),  # anonymous: counted apart
]


def hand_exposures() -> list[str]:
    return [_exposure(*exposure) for exposure in HAND_EXPOSURES]


HAND_INTERACTIONS = [  # user_id, item_id, rating, timestamp
    ("a", "i2", "4", "1970-01-01T00:02:30Z"),  # 150 s, after a's exposure of i2: a hit
    ("b", "i1", "5", "50"),  # before b's exposure: not a hit
    ("b", "i9", "5", "200"),  # not recommended to b: not a hit
    ("c", "i4", "2", "300"),  # hit
    ("c", "i5", "5", "500"),  # hit (second exposure): c's mean rating 3.5
    ("c", "i5", "1", "350"),  # before the exposure of i5: not a hit
    ("e", "i3", "5", "200"),  # hit, but only with k >= 3
    ("f", "i7", "3", "150"),  # hit
    ("g", "i1", "5", "300"),  # left out with g
    ("h", "i1", "5", "300"),  # never exposed
]


def _wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, min(1.0, centre + half)


@pytest.fixture
def hand_made(tmp_path: Path) -> tuple[Path, Path]:
    exposures = tmp_path / "exposures.jsonl"
    exposures.with_name("exposures.jsonl.1").write_text("\n".join(hand_exposures()[:4]) + "\n")  # rotated: older
    exposures.write_text("\n".join(hand_exposures()[4:]) + "\n")
    interactions = tmp_path / "interactions.csv"
    lines = ["user_id,item_id,rating,timestamp", *(",".join(row) for row in HAND_INTERACTIONS)]
    interactions.write_text("\n".join(lines) + "\n")
    return exposures, interactions


def test_the_comparison_gives_the_hand_computed_figures(hand_made: tuple[Path, Path]) -> None:
    exposures, interactions = hand_made
    result = report.compare_variants(exposures, str(interactions))
    champion, challenger = result.variants["champion"], result.variants["challenger"]
    # champion: a, b, c, d exposed; a and c hit; a's hit rated 4, c's 2 and 5 (mean 3.5)
    assert (champion.users, champion.hit_users, champion.exposures) == (4, 2, 5)
    assert champion.hit_rate == 0.5 and champion.hit_rate_ci == pytest.approx(_wilson(2, 4))
    assert champion.mean_rating == 3.75
    half = 1.959963984540054 * math.sqrt(((4 - 3.75) ** 2 + (3.5 - 3.75) ** 2) / 1 / 2)  # sd / sqrt(n), ddof 1
    assert champion.mean_rating_ci == pytest.approx((3.75 - half, 3.75 + half))
    # challenger: e and f exposed, both hit (ratings 5 and 3)
    assert (challenger.users, challenger.hit_users, challenger.hit_rate, challenger.mean_rating) == (2, 2, 1.0, 4.0)
    assert challenger.hit_rate_ci == pytest.approx(_wilson(2, 2))
    diff = result.difference
    assert diff.hit_rate == 0.5 and diff.mean_rating == 0.25
    rate_half = 1.959963984540054 * math.sqrt(0.5 * 0.5 / 4 + 0.0)
    assert diff.hit_rate_ci == pytest.approx((0.5 - rate_half, 0.5 + rate_half))
    mean_half = 1.959963984540054 * math.sqrt(0.125 / 2 + 2.0 / 2)  # variances 0.125 and 2, two users each
    assert diff.mean_rating_ci == pytest.approx((0.25 - mean_half, 0.25 + mean_half))
    assert (result.users_in_both, result.exposures_without_user) == (1, 1)
    assert result.files == (str(exposures.with_name("exposures.jsonl.1")), str(exposures))


def test_hits_count_only_the_first_k_items(hand_made: tuple[Path, Path]) -> None:
    exposures, interactions = hand_made
    result = report.compare_variants(exposures, str(interactions), k=2)
    assert result.variants["champion"].hit_rate == 0.5  # a's i2 is second
    assert result.variants["challenger"].hit_rate == 0.5  # e's i3 is third: only f hits
    assert result.difference.hit_rate == 0.0


def test_a_sql_source_gives_the_same_comparison(hand_made: tuple[Path, Path], tmp_path: Path) -> None:
    import sqlalchemy as sa

    exposures, interactions = hand_made
    frame = pd.read_csv(interactions, dtype=str)
    frame["timestamp"] = frame["timestamp"].replace("1970-01-01T00:02:30Z", "150").astype(int)
    frame["rating"] = frame["rating"].astype(float)
    uri = f"sqlite:///{tmp_path / 'source.db'}"
    engine = sa.create_engine(uri)
    frame.to_sql("interactions", engine, index=False)
    engine.dispose()
    assert (
        report.compare_variants(exposures, uri).variants
        == report.compare_variants(exposures, str(interactions)).variants
    )


def test_recsys_compare_variants_prints_the_table_or_json(
    hand_made: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    exposures, interactions = hand_made
    assert main(["compare-variants", "--exposures", str(exposures), "--interactions", str(interactions)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:6] == ["champion", "5", "4", "2", "0.500", "[0.150,"]
    assert table[2].split()[:5] == ["challenger", "2", "2", "2", "1.000"]
    assert table[3].split()[:2] == ["difference", "+0.500"]
    args = [
        "compare-variants",
        "--exposures",
        str(exposures),
        "--interactions",
        str(interactions),
        "--k",
        "2",
        "--json",
    ]
    assert main(args) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["variants"]["challenger"]["hit_rate"] == 0.5 and figures["k"] == 2


def test_a_line_cut_short_at_the_end_of_the_log_is_skipped(hand_made: tuple[Path, Path]) -> None:
    exposures, interactions = hand_made
    with exposures.open("a") as log:
        log.write(hand_exposures()[0][:30])  # a crash mid-write: no newline
    assert report.compare_variants(exposures, str(interactions)).variants["champion"].users == 4


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (lambda: "{not json", r"exposures.jsonl, line 2: not JSON"),
        (lambda: "[1, 2]", r"line 2: not a JSON object"),
        (lambda: json.dumps({"ts": 1, "variant": "champion", "user": None, "items": []}), r"line 2: field 'key' is"),
        (lambda: _exposure(1, "staging", "a", []), r"line 2: field 'variant' is 'staging', not one of"),
        (lambda: _exposure(1, "champion", "a", [], key="0" * 16), r"line 2: .*another key.*RECSYS_PSEUDONYM_KEY"),
        (
            lambda: _exposure(1, "champion", "a", []).replace('"ts": 1', '"ts": "1"'),
            r"line 2: field 'ts' has the wrong",
        ),
    ],
)
def test_a_bad_exposure_log_is_refused_naming_file_and_line(
    tmp_path: Path, line: Callable[[], str], message: str
) -> None:
    exposures = tmp_path / "exposures.jsonl"
    exposures.write_text(hand_exposures()[0] + "\n" + line() + "\n")
    with pytest.raises(report.ExposureLogError, match=message):
        report.read_exposures(exposures)


def test_bad_interactions_are_refused_naming_the_column(hand_made: tuple[Path, Path], tmp_path: Path) -> None:
    exposures, _ = hand_made
    no_rating = tmp_path / "no_rating.csv"
    no_rating.write_text("user_id,item_id,timestamp\na,i2,150\n")
    with pytest.raises(ValueError, match=r"no_rating.csv: missing required column\(s\) \['rating'\]"):
        report.compare_variants(exposures, str(no_rating))
    bad_time = tmp_path / "bad_time.csv"
    bad_time.write_text("user_id,item_id,rating,timestamp\na,i2,4,150\na,i3,4,yesterday\n")
    with pytest.raises(ValueError, match=r"bad_time.csv: column 'timestamp', row 2: not a time"):
        report.compare_variants(exposures, str(bad_time))
    with pytest.raises(FileNotFoundError, match="interactions file"):
        report.compare_variants(exposures, str(tmp_path / "nowhere.csv"))


def test_without_the_pseudonym_key_the_report_exits_2_saying_why(
    hand_made: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exposures, interactions = hand_made
    monkeypatch.delenv(KEY_ENV)
    assert main(["compare-variants", "--exposures", str(exposures), "--interactions", str(interactions)]) == 2
    assert f"{KEY_ENV} is not set" in capsys.readouterr().err
    assert main(["compare-variants", "--exposures", "/nowhere/log", "--interactions", str(interactions)]) == 2


# ---------------------------------------------------------------- the API on a real registry
@dataclass(frozen=True)
class Registry:
    root: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def settings(self, **values: Any) -> ServeSettings:
        defaults = {"workdir": str(self.root), "tracking_uri": self.uri, "poll_seconds": 0, "torch_threads": 0}
        return ServeSettings(**{**defaults, **values})


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, make_tiny_dir: Callable[[Path, str], Path]) -> Registry:
    base = tmp_path_factory.mktemp("variants")
    data = make_tiny_dir(base / "data", "recbole")
    cfg = PipelineConfig().with_overrides({"extract.source": str(data), **TINY_PIPELINE})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("RECSYS_WORKDIR", raising=False)
        assert run_pipeline(cfg, base / "work", run_id="first")["model_version"] == "1"
    registry = Registry(base / "work")
    client = registry.client()
    v1 = client.get_model_version(NAME, "1")
    assert client.create_model_version(NAME, v1.source, run_id=v1.run_id).version in ("2", 2)
    broken = client.create_model_version(NAME, f"runs:/{v1.run_id}/no-such-model", run_id=v1.run_id)
    assert str(broken.version) == "3"
    return registry


@pytest.fixture
def challenger(registry: Registry) -> Iterator[str]:
    """``@challenger`` on version 2 for one test."""
    client = registry.client()
    client.set_registered_model_alias(NAME, CHALLENGER, "2")
    try:
        yield "2"
    finally:
        client.delete_registered_model_alias(NAME, CHALLENGER)


USERS = [f"user-{i}" for i in range(24)]


def _recommend_each(client: TestClient, users: list[str]) -> list[dict[str, Any]]:
    answers = []
    for user in users:
        response = client.post("/recommend", json={"request_id": f"r-{user}", "user_id": user, "k": 3})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


@pytest.mark.slow
def test_share_zero_sends_every_request_to_the_champion(registry: Registry, challenger: str) -> None:
    with TestClient(create_app(settings=registry.settings())) as client:
        answers = _recommend_each(client, USERS)
        variants = client.get("/health").json()["variants"]
    assert {(a["variant"], a["model_version"]) for a in answers} == {("champion", "1")}
    assert variants["challenger"]["state"] == "off" and variants["effective_share"] == 0.0
    assert variants["served"]["champion"]["served"] == len(USERS) and variants["served"]["challenger"]["served"] == 0


@pytest.mark.slow
def test_the_challenger_answers_its_share_and_every_response_names_its_variant(
    registry: Registry, challenger: str, tmp_path: Path
) -> None:
    log = tmp_path / "exposures.jsonl"
    # items are added below: a serving workdir of its own (the items log lives there)
    settings = registry.settings(challenger_share=0.5, exposure_log=str(log), workdir=str(tmp_path / "serve"))
    with TestClient(create_app(settings=settings)) as client:
        answers = _recommend_each(client, USERS)
        batch = client.post("/recommend/batch", json=[{"request_id": u, "k": 2} for u in USERS[:6]]).json()
        added = client.post("/items", json=[{"item_id": "n1", "title": "Lighthouse storms", "genres": ["Drama"]}])
        assert added.status_code == 200
        with_new = client.post(
            "/recommend/batch", json=[{"request_id": "x", "user_id": u, "candidates": ["n1"], "k": 1} for u in USERS]
        ).json()
        health = client.get("/health").json()
        schema = client.get("/openapi.json").json()["components"]["schemas"]["Recommendation"]
    expected = [variant_of({"user_id": u}, 0.5) for u in USERS]
    assert [a["variant"] for a in answers] == expected and set(expected) == {"champion", "challenger"}
    assert all(a["model_version"] == {"champion": "1", "challenger": "2"}[a["variant"]] for a in answers)
    assert [b["variant"] for b in batch] == [variant_of({"request_id": u}, 0.5) for u in USERS[:6]]  # no user id
    assert [[i["item_id"] for i in a["items"]] for a in with_new] == [["n1"]] * len(USERS)  # added to both variants
    served = health["variants"]["served"]
    n_challenger = expected.count("challenger") * 2 + [b["variant"] for b in batch].count("challenger")
    assert served["challenger"] == {"served": n_challenger, "by_version": {"2": n_challenger}}
    assert served["champion"]["served"] == 2 * len(USERS) + len(batch) - n_challenger
    assert health["variants"]["challenger"]["state"] == "serving" and health["variants"]["effective_share"] == 0.5
    assert health["model_version"] == "1"  # the champion's, as before
    assert "variant" in schema["required"] and schema["properties"]["variant"]["enum"] == ["champion", "challenger"]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 2 * len(USERS) + len(batch)
    assert not any(u in log.read_text() for u in USERS)  # pseudonyms only
    assert [(r["user"], r["variant"], r["items"]) for r in records[: len(USERS)]] == [
        (pseudonym(u), a["variant"], [i["item_id"] for i in a["items"]]) for u, a in zip(USERS, answers)
    ]


@pytest.mark.slow
def test_a_missing_challenger_sends_everyone_to_the_champion_and_health_says_so(registry: Registry) -> None:
    with TestClient(create_app(settings=registry.settings(challenger_share=0.5))) as client:
        answers = _recommend_each(client, USERS)
        variants = client.get("/health").json()["variants"]
        assert {a["variant"] for a in answers} == {"champion"}
        assert variants["challenger"]["state"] == "missing" and variants["effective_share"] == 0.0
        assert "no 'challenger' alias" in variants["challenger"]["error"]
        holder = client.app.state.holder
        client_mlflow = registry.client()
        client_mlflow.set_registered_model_alias(NAME, CHALLENGER, "2")  # set later: followed at the next poll
        try:
            holder.poll_once()
            assert client.get("/health").json()["variants"]["challenger"]["state"] == "serving"
            assert "challenger" in {a["variant"] for a in _recommend_each(client, USERS)}
        finally:
            client_mlflow.delete_registered_model_alias(NAME, CHALLENGER)
        holder.poll_once()  # removed again: back to the champion alone
        assert client.get("/health").json()["variants"]["challenger"]["state"] == "missing"
        assert {a["variant"] for a in _recommend_each(client, USERS)} == {"champion"}


@pytest.mark.slow
def test_a_challenger_that_fails_to_load_sends_everyone_to_the_champion(registry: Registry) -> None:
    client_mlflow = registry.client()
    client_mlflow.set_registered_model_alias(NAME, CHALLENGER, "3")  # a version whose model does not exist
    try:
        with TestClient(create_app(settings=registry.settings(challenger_share=1.0))) as client:
            answers = _recommend_each(client, USERS)
            variants = client.get("/health").json()["variants"]
    finally:
        client_mlflow.delete_registered_model_alias(NAME, CHALLENGER)
    assert {(a["variant"], a["model_version"]) for a in answers} == {("champion", "1")}
    assert variants["challenger"]["state"] == "failed" and variants["challenger"]["version"] == "3"
    assert "ModelNotFoundError" in variants["challenger"]["error"] and variants["effective_share"] == 0.0
