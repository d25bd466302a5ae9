"""Sharded text encoding (`text.shards`): shards split the snapshot's texts disjointly and stably, encode together
exactly the texts text_embed needs, once, into the vector cache, with the vectors text_embed alone would give; a
re-run encodes nothing, and a broken part file is skipped and its texts encoded anew. On the tiny snapshot with
the session's tiny random BERT (``tiny_bert``), so the encoder is real and small."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from recsys_tasks.artifacts import StageResult
from recsys_tasks.config import ConfigError, PipelineConfig, TextConfig
from recsys_tasks.text.embed import VectorCache, text_embed, text_keys
from recsys_tasks.text.shards import encode_shard, needed_texts, shard_jobs, shard_of, shard_texts

SHARDS = 3
SIZES = [9, 11, 17]  # the tiny snapshot's 37 distinct texts per shard of 3 (their SHA-256 heads)


@pytest.fixture(scope="module", autouse=True)
def _offline(hf_offline: None) -> None:
    """Every test here offline (`conftest.hf_offline`)."""


@pytest.fixture(scope="module")
def needed(tiny_snapshot: StageResult) -> list[str]:
    return needed_texts(tiny_snapshot.out_dir)


def _cfg(tiny_bert: str, cache: Path) -> TextConfig:
    return TextConfig(model=tiny_bert, device="cpu", cache_dir=str(cache), shards=SHARDS)


def _encode_all(cfg: TextConfig, snapshot: StageResult) -> list[dict]:
    return [encode_shard(cfg, snapshot.out_dir, i, SHARDS) for i in range(SHARDS)]


def _parts(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/part-*.npz"))


# ---------------------------------------------------------------- which text is in which shard
def test_a_texts_shard_is_its_sha256_head_modulo_the_shards() -> None:
    texts = ["I like Drama movies.", "A 25-34 year old female artist.", "Toy Story (1995). Genres: Animation."]
    expected = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big") % 7 for t in texts]
    assert shard_of(texts, 7).tolist() == expected
    assert shard_of(texts[::-1], 7).tolist() == expected[::-1]  # a text's shard does not depend on the list
    assert shard_of(texts, 1).tolist() == [0, 0, 0]


def test_shards_split_the_needed_texts_disjointly_and_cover_them(needed: list[str]) -> None:
    shards = [shard_texts(needed, i, SHARDS) for i in range(SHARDS)]
    assert sorted(t for shard in shards for t in shard) == sorted(needed)  # each text in exactly one shard
    assert all(shards), [len(s) for s in shards]  # the tiny snapshot's texts fill every shard
    assert [len(s) for s in shards] == SIZES


def test_one_shard_plans_no_job_and_more_plan_one_each(tmp_path: Path) -> None:
    assert shard_jobs(tmp_path, 1) == []  # text_embed then encodes alone, as without sharding
    assert shard_jobs(tmp_path, 2) == [
        {"shard": 0, "shards": 2, "snapshot": str(tmp_path)},
        {"shard": 1, "shards": 2, "snapshot": str(tmp_path)},
    ]


def test_bad_shard_numbers_raise_errors_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="text shards must be 1 or more, got 0"):
        shard_of(["a"], 0)
    with pytest.raises(ValueError, match="text shards must be 1 or more, got 0"):
        shard_jobs(tmp_path, 0)
    with pytest.raises(ValueError, match=r"text shard must be in 0\.\.1, got 2"):
        shard_texts(["a"], 2, 2)
    with pytest.raises(ConfigError, match="'text.shards': 0 is invalid; expected 1 or more"):
        PipelineConfig().with_overrides(["text.shards=0"])
    with pytest.raises(ConfigError, match="text.cache_dir=off turns off"):
        TextConfig(shards=2, cache_dir="off")
    assert PipelineConfig().with_overrides(["text.shards=4"]).text.shards == 4
    with pytest.raises(ValueError, match="text.cache_dir is 'off'"):
        encode_shard(TextConfig(cache_dir="off"), tmp_path, 0, 1)


# ---------------------------------------------------------------- encoding into the cache
def test_needed_texts_are_the_distinct_texts_text_embed_encodes(needed: list[str], tiny_text: StageResult) -> None:
    import json

    texts = json.loads(tiny_text.path("texts").read_text())
    assert needed == list(dict.fromkeys(texts["items"] + texts["users"] + texts["tastes"]))
    assert len(needed) == tiny_text.metrics["n_texts"] == sum(SIZES)


def test_shards_encode_each_needed_text_once_and_text_embed_then_only_assembles(
    tiny_snapshot: StageResult, tiny_text: StageResult, tiny_bert: str, needed: list[str], tmp_path: Path
) -> None:
    cfg = _cfg(tiny_bert, tmp_path / "cache")
    reports = _encode_all(cfg, tiny_snapshot)
    assert [(r["shard"], r["texts"], r["encoded"], r["cached"]) for r in reports] == [
        (i, n, n, 0) for i, n in enumerate(SIZES)
    ]
    parts = _parts(tmp_path / "cache")
    assert sorted(str(p) for p in parts) == sorted(r["part"] for r in reports)  # one part per shard
    keys = np.concatenate([np.load(p)["keys"] for p in parts])
    assert len(keys) == len(needed)  # no text twice
    assert {k.tobytes() for k in keys} == {k.tobytes() for k in text_keys(needed)}

    assembled = text_embed(cfg, tiny_snapshot.out_dir, tmp_path / "text")
    assert assembled.metrics["n_encoded"] == 0 and assembled.metrics["n_cached"] == len(needed)
    for name in ("items", "users", "tastes"):  # the unsharded text_embed's vectors (its own cache)
        np.testing.assert_allclose(np.load(assembled.path(name)), np.load(tiny_text.path(name)), atol=1e-5)
    assert _parts(tmp_path / "cache") == parts  # three parts: not past the limit, nothing merged


def test_a_rerun_of_a_finished_shard_encodes_nothing_and_writes_nothing(
    tiny_snapshot: StageResult, tiny_bert: str, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_bert, tmp_path / "cache")
    first = encode_shard(cfg, tiny_snapshot.out_dir, 1, SHARDS)
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*"))
    again = encode_shard(cfg, tiny_snapshot.out_dir, 1, SHARDS)
    assert (first["encoded"], again["encoded"], again["cached"], again["part"]) == (SIZES[1], 0, SIZES[1], None)
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*")) == files
    other = encode_shard(cfg, tiny_snapshot.out_dir, 0, SHARDS)  # another shard still encodes its own texts
    assert other["encoded"] == SIZES[0] and len(_parts(tmp_path / "cache")) == 2


def test_a_shard_without_texts_loads_no_model_and_writes_nothing(
    tiny_snapshot: StageResult, needed: list[str], tmp_path: Path
) -> None:
    """A model that cannot load would fail any shard that loads it: the empty shard must not."""
    n = 64
    empty = min(set(range(n)) - set(shard_of(needed, n).tolist()))
    cfg = TextConfig(model=str(tmp_path / "no-such-model"), device="cpu", cache_dir=str(tmp_path / "cache"))
    report = encode_shard(cfg, tiny_snapshot.out_dir, empty, n)
    assert (report["texts"], report["encoded"], report["part"]) == (0, 0, None)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped-byte", "nan-vectors"])
def test_a_broken_part_is_skipped_with_a_warning_and_its_texts_encoded_anew(
    tiny_snapshot: StageResult,
    tiny_text: StageResult,
    tiny_bert: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    """Guards reading a damaged part as vectors: a truncated file, a flipped byte (the zip's CRC-32) and
    non-finite vectors are each found, the part skipped, and its shard's texts encoded again."""
    cfg = _cfg(tiny_bert, tmp_path / "cache")
    reports = _encode_all(cfg, tiny_snapshot)
    broken = Path(reports[1]["part"])
    data = broken.read_bytes()
    if damage == "truncated":
        broken.write_bytes(data[: len(data) // 2])
    elif damage == "flipped-byte":
        broken.write_bytes(data[:-400] + bytes([data[-400] ^ 0xFF]) + data[-399:])  # inside the vectors
    else:
        with np.load(broken) as z:
            keys, vectors = z["keys"], z["vectors"].copy()
        vectors[0, 0] = np.nan
        with open(broken, "wb") as f:
            np.savez(f, keys=keys, vectors=vectors)
    caplog.set_level(logging.WARNING, logger="recsys_tasks.text.embed")
    again = [encode_shard(cfg, tiny_snapshot.out_dir, i, SHARDS)["encoded"] for i in range(SHARDS)]
    assert again == [0, SIZES[1], 0]
    assert f"{broken} is skipped" in caplog.text
    assembled = text_embed(cfg, tiny_snapshot.out_dir, tmp_path / "text")
    assert assembled.metrics["n_encoded"] == 0
    np.testing.assert_allclose(np.load(assembled.path("items")), np.load(tiny_text.path("items")), atol=1e-5)


def test_text_embed_merges_the_parts_shards_left_past_the_limit(
    tiny_snapshot: StageResult, tiny_bert: str, needed: list[str], tmp_path: Path
) -> None:
    """Shards never merge parts (they run side by side); text_embed, running alone after them, does."""
    from recsys_tasks.text.embed import MAX_PARTS

    n = MAX_PARTS + 2
    cfg = TextConfig(model=tiny_bert, device="cpu", cache_dir=str(tmp_path / "cache"), shards=n)
    filled = sorted(set(shard_of(needed, n).tolist()))
    for i in range(n):
        encode_shard(cfg, tiny_snapshot.out_dir, i, n)
    assert len(_parts(tmp_path / "cache")) == len(filled) > MAX_PARTS
    assembled = text_embed(cfg, tiny_snapshot.out_dir, tmp_path / "text")
    assert assembled.metrics["n_encoded"] == 0
    (part,) = _parts(tmp_path / "cache")
    keys, _, _ = VectorCache(part.parent, int(assembled.metrics["dim"])).load()
    assert len(keys) == len(needed)
