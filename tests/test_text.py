"""The text encoder and the text stage, and the sentences they encode.

The encoder's mechanics (order, batching, padding, threads) and the stage's layout are checked on the
session's tiny random BERT (``tiny_bert``, hidden 32); the real packaged all-MiniLM-L6-v2 (offline)
is loaded only where its quality is what is checked (marked slow).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_tasks.artifacts import StageResult
from recsys_tasks.config import DEFAULT_TEXT_MODEL, TextConfig
from recsys_tasks.data.dataset import Dataset
from recsys_tasks.text.embed import MAX_PARTS, VectorCache, cache_root, encode_new, encoder_fingerprint, text_embed
from recsys_tasks.text.encoder import TextEncoder, resolve_model
from recsys_tasks.text.texts import item_text, profile_text, taste_sentence, taste_sentences

MINILM_DIM = 384  # all-MiniLM-L6-v2's hidden size
TINY_DIM = 32  # conftest's tiny BERT


@pytest.fixture(scope="module", autouse=True)
def _offline(hf_offline: None) -> None:
    """Every test here offline (`conftest.hf_offline`)."""


@pytest.fixture(scope="module")
def encoder(_offline: None, tiny_bert: str) -> TextEncoder:
    """The tiny random BERT: the encoder's mechanics do not depend on its weights."""
    return TextEncoder(tiny_bert, device="cpu")


@pytest.fixture(scope="module")
def minilm(_offline: None) -> TextEncoder:
    """The real packaged all-MiniLM-L6-v2, for the checks of what it encodes."""
    return TextEncoder(DEFAULT_TEXT_MODEL, device="cpu")


@pytest.fixture(scope="module")
def embedded(_offline: None, tiny_text: StageResult, tiny_snapshot: StageResult) -> tuple[StageResult, Dataset]:
    return tiny_text, Dataset.load(tiny_snapshot.out_dir)


# ---------------------------------------------------------------- resolve_model
@pytest.mark.parametrize("name", [DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2", "packaged"])
def test_packaged_default_resolves_to_a_local_model_folder(name: str) -> None:
    folder = Path(resolve_model(name))
    assert folder.is_absolute() and (folder / "config.json").is_file()


def test_an_existing_path_resolves_to_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my-model").mkdir()
    assert resolve_model(str(tmp_path / "my-model")) == str((tmp_path / "my-model").resolve())
    monkeypatch.chdir(tmp_path)
    assert resolve_model("my-model") == str((tmp_path / "my-model").resolve())  # relative: made absolute


def test_an_unknown_hub_name_passes_through_unchanged() -> None:
    assert resolve_model("some-org/some-unknown-model") == "some-org/some-unknown-model"


# ---------------------------------------------------------------- TextEncoder
def test_encode_gives_unit_float32_rows(encoder: TextEncoder) -> None:
    vectors = encoder.encode(["I like Drama movies.", "A 25-34 year old female artist.", "x"])
    assert encoder.dim == TINY_DIM and vectors.shape == (3, TINY_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, TINY_DIM)


def test_encode_keeps_input_order_although_batches_are_sorted_by_length(encoder: TextEncoder) -> None:
    """Guards the scatter back from length-sorted batches: row i must be text i's vector."""
    texts = [
        "A much longer sentence about a space opera with robots, lasers and a lost princess.",
        "Hi.",
        "Romantic comedy set in Paris.",
        "A documentary.",
        "Horror in a cabin in the woods, at night.",
    ]
    batched = encoder.encode(texts, batch_size=2)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    assert not np.allclose(batched[0], batched[1], atol=1e-2)  # distinct texts, distinct rows


@pytest.mark.parametrize("threads", [1, 3])
def test_background_tokenization_gives_the_inline_vectors_in_order(encoder: TextEncoder, threads: int) -> None:
    """Tokenizer threads work batches ahead of the encoder; rows must still be text i's vector."""
    texts = [f"Movie number {i}: " + "a long and winding plot " * (i % 7) for i in range(23)]
    inline = encoder.encode(texts, batch_size=2, tokenizer_threads=0)  # chunks of 16: two of them
    ahead = encoder.encode(texts, batch_size=2, tokenizer_threads=threads)
    np.testing.assert_allclose(ahead, inline, atol=1e-6)
    assert len({v.round(4).tobytes() for v in ahead}) == len(texts)


def test_equal_length_batches_give_the_padded_and_masked_vectors(encoder: TextEncoder) -> None:
    """Batches of one token count skip padding and the mask; the vectors must not change."""
    texts = [
        "Hi.",
        "A documentary.",
        "Romantic comedy set in Paris.",
        "Toy Story (1995). Genres: Animation.",
        "A much longer sentence about a space opera with robots, lasers and a lost princess.",
    ]
    batches = encoder.batches(texts, np.arange(len(texts)), batch_size=64)
    assert all("attention_mask" not in enc for _, enc in batches) and len(batches) == len(texts)
    import torch

    with torch.inference_mode():
        padded = encoder.pool(encoder._padded(texts, pin=False)).numpy()
    np.testing.assert_allclose(encoder.encode(texts), padded, atol=1e-5)


def test_padded_passes_give_the_vectors_of_encode_from_several_threads_at_once(encoder: TextEncoder) -> None:
    """The API's passes (`encode_padded`: similar token counts padded together, several lanes at
    once) must give the sentences the vectors `encode` gives them."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [
        "Hi.",
        "I like owls.",
        "I like bats.",
        "A documentary about the sea.",
        "Toy Story (1995). Genres: Animation, Children's, Comedy.",
        "A much longer sentence about a space opera with robots, lasers, a lost princess and a smuggler. " * 3,
    ]
    expected = encoder.encode(texts)
    np.testing.assert_allclose(encoder.encode_padded(texts), expected, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_padded(texts[1:2]), expected[1:2], atol=1e-5)
    with ThreadPoolExecutor(3) as pool:
        first, second, reversed_ = pool.map(encoder.encode_padded, [texts[:3], texts[3:], texts[::-1]])
    np.testing.assert_allclose(np.vstack([first, second]), expected, atol=1e-5)
    np.testing.assert_allclose(reversed_, expected[::-1], atol=1e-5)


@pytest.mark.slow
def test_the_packaged_minilm_puts_a_paraphrase_closer_than_an_unrelated_sentence(minilm: TextEncoder) -> None:
    assert minilm.path == resolve_model(DEFAULT_TEXT_MODEL) and minilm.dim == MINILM_DIM
    anchor, paraphrase, unrelated = minilm.encode(
        ["I love science fiction films.", "I enjoy sci-fi movies.", "The stock market fell sharply today."]
    )
    assert anchor.shape == (MINILM_DIM,) and anchor.dtype == np.float32
    assert anchor @ paraphrase > anchor @ unrelated + 0.2


@pytest.mark.parametrize("kind", ["missing folder", "folder without a model"])
def test_a_model_that_cannot_be_loaded_raises_a_value_error_naming_it(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "no-such-model"
    if kind == "folder without a model":
        path.mkdir()
    with pytest.raises(ValueError, match="no-such-model.*could not be loaded"):
        TextEncoder(str(path), device="cpu")


# ---------------------------------------------------------------- sentences
@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (
            {"item_id": "7", "title": "Crash, The", "year": 1987, "genres": "Sci-Fi|Comedy", "description": ""},
            "Crash, The (1987). Genres: Sci-Fi, Comedy.",
        ),
        (
            {
                "item_id": "1",
                "title": "Toy Story",
                "year": 1995,
                "genres": "Animation",
                "description": "Toys come to life.",
            },
            "Toy Story (1995). Genres: Animation. Toys come to life.",
        ),
        ({"item_id": "3", "title": "Movie 3", "year": pd.NA, "genres": "Drama"}, "Movie 3. Genres: Drama."),
        ({"item_id": "42", "title": "", "year": None, "genres": ""}, "42."),  # no title: the id stands in
    ],
)
def test_item_text(item: dict, expected: str) -> None:
    assert item_text(item) == expected


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ({"age": 29, "gender": "F", "occupation": "programmer"}, "A 25-34 year old female programmer."),
        ({"age": 40, "gender": "m", "occupation": "student"}, "A 35-44 year old male student."),
        ({"age": None, "gender": "F", "occupation": ""}, "A female person."),
        ({"age": 60, "gender": "", "occupation": "none"}, "A 56+ year old person."),
        ({"age": 15, "gender": "M", "occupation": "student"}, "A teenage male student."),
        ({}, "A person."),
    ],
)
def test_profile_text(profile: dict, expected: str) -> None:
    assert profile_text(profile) == expected


def test_taste_sentences_cover_every_genre_and_pair_once() -> None:
    assert taste_sentence(["Sci-Fi", "Horror"]) == "I like Sci-Fi and Horror movies."
    assert taste_sentence(["Drama"]) == "I like Drama movies."
    sentences = taste_sentences(["Drama", "Action", "Comedy"])
    assert sentences == [
        "I like Action movies.",
        "I like Comedy movies.",
        "I like Drama movies.",
        "I like Action and Comedy movies.",
        "I like Action and Drama movies.",
        "I like Comedy and Drama movies.",
    ]
    assert taste_sentences([]) == []


# ---------------------------------------------------------------- text_embed
def test_text_embed_rows_are_aligned_with_the_snapshot(
    embedded: tuple[StageResult, Dataset], encoder: TextEncoder
) -> None:
    result, dataset = embedded
    items, users, tastes = (np.load(result.path(n)) for n in ("items", "users", "tastes"))
    texts = json.loads(result.path("texts").read_text())
    assert items.shape == (15, TINY_DIM) and users.shape == (12, TINY_DIM) and tastes.shape == (4 + 6, TINY_DIM)
    assert texts["items"] == [item_text(r) for r in dataset.items.to_dict("records")]
    assert texts["users"] == [profile_text(r) for r in dataset.users.to_dict("records")]
    assert texts["tastes"] == taste_sentences(["Action", "Comedy", "Drama", "Sci-Fi"])
    row = dataset.items.index[dataset.items["item_id"] == "7"][0]
    assert texts["items"][row] == "Crash, The (1987). Genres: Sci-Fi, Comedy."
    np.testing.assert_allclose(items[row], encoder.encode([texts["items"][row]])[0], atol=1e-4)
    np.testing.assert_allclose(users, encoder.encode(texts["users"]), atol=1e-4)
    # items 1, 5, 9 and 13 share genres but not titles: their rows must differ
    assert not np.allclose(items[0], items[4], atol=1e-3)


def test_text_embed_result_names_the_resolved_model(embedded: tuple[StageResult, Dataset], tiny_bert: str) -> None:
    result, _ = embedded
    assert result.info == {"model": tiny_bert, "model_path": resolve_model(tiny_bert), "device": "cpu"}
    texts = json.loads(result.path("texts").read_text())
    distinct = set(texts["items"]) | set(texts["users"]) | set(texts["tastes"])  # each encoded once
    assert result.metrics["dim"] == TINY_DIM and result.metrics["n_texts"] == len(distinct)
    assert StageResult.load(result.out_dir) == result
    assert [p.name for p in Path(result.out_dir).parent.iterdir()] == ["text"]  # nothing written beside it


# ---------------------------------------------------------------- the vector cache
def test_a_second_run_encodes_nothing_and_gives_the_same_vectors(
    tiny_snapshot: StageResult, tiny_bert: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real tiny encoder, its calls counted: the second run reads every vector from the cache."""
    encoded: list[int] = []
    encode = TextEncoder.encode

    def counted(self: TextEncoder, texts, *args, **kwargs):  # noqa: ANN001, ANN202
        encoded.append(len(texts))
        return encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(TextEncoder, "encode", counted)
    cfg = TextConfig(model=tiny_bert, device="cpu", cache_dir=str(tmp_path / "cache"))
    first = text_embed(cfg, tiny_snapshot.out_dir, tmp_path / "first")
    distinct = int(first.metrics["n_texts"])
    assert encoded == [distinct] and first.metrics["n_encoded"] == distinct and first.metrics["n_cached"] == 0
    second = text_embed(cfg, tiny_snapshot.out_dir, tmp_path / "second")
    assert encoded == [distinct]  # no call at all
    assert second.metrics["n_encoded"] == 0 and second.metrics["n_cached"] == distinct
    for name in ("items", "users", "tastes"):
        np.testing.assert_array_equal(np.load(first.path(name)), np.load(second.path(name)))
    (folder,) = (tmp_path / "cache").iterdir()
    assert len(list(folder.glob("part-*.npz"))) == 1 and (folder / "encoder.json").is_file()
    off = text_embed(dataclasses.replace(cfg, cache_dir="off"), tiny_snapshot.out_dir, tmp_path / "off")
    assert encoded == [distinct, distinct] and off.metrics["n_encoded"] == distinct
    np.testing.assert_allclose(np.load(off.path("items")), np.load(first.path("items")), atol=1e-5)


def test_only_new_texts_are_encoded_and_cached_ones_come_back_unchanged(encoder: TextEncoder, tmp_path: Path) -> None:
    cache = VectorCache.for_encoder(tmp_path, encoder)
    first, n = encode_new(encoder, ["I like Drama movies.", "A teenage male student."], 0, cache)
    assert n == 2
    second, n = encode_new(encoder, ["A teenage male student.", "Movie 3 (1983).", "I like Drama movies."], 0, cache)
    assert n == 1
    np.testing.assert_array_equal(second[[0, 2]], first[[1, 0]])
    np.testing.assert_allclose(second[1], encoder.encode(["Movie 3 (1983)."])[0], atol=1e-5)
    assert len(cache.parts()) == 2  # one part per run that encoded something
    assert encode_new(encoder, ["Movie 3 (1983)."], 0, cache)[1] == 0 and len(cache.parts()) == 2


def test_the_cache_folder_is_the_encoders_weights_and_max_length(tiny_bert: str, tmp_path: Path) -> None:
    a, b = TextEncoder(tiny_bert, device="cpu"), TextEncoder(tiny_bert, device="cpu")
    assert encoder_fingerprint(a) == encoder_fingerprint(b)
    assert VectorCache.for_encoder(tmp_path, a).folder == VectorCache.for_encoder(tmp_path, b).folder
    assert encoder_fingerprint(TextEncoder(tiny_bert, device="cpu", max_length=16)) != encoder_fingerprint(a)
    import torch

    with torch.no_grad():
        next(b.model.parameters())[0, 0] += 1.0  # other weights
    assert encoder_fingerprint(b) != encoder_fingerprint(a)


def test_parts_past_the_limit_are_merged_into_one(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path / "enc", dim=3)
    rng = np.random.default_rng(0)
    texts = [f"text {i}" for i in range(MAX_PARTS + 1)]
    vectors = rng.normal(size=(len(texts), 3)).astype(np.float32)
    for i, text in enumerate(texts):
        cache.add([text, texts[0]], vectors[[i, 0]])  # text 0 in every part: merged once
        assert len(cache.parts()) == (i + 1 if i < MAX_PARTS else 1)
    keys, _, _ = cache.load()
    assert len(keys) == len(texts)
    found, got = cache.lookup(texts + ["unseen"])
    assert found.tolist() == [True] * len(texts) + [False]
    np.testing.assert_array_equal(got[:-1], vectors)


def test_a_crash_while_writing_leaves_no_part_and_an_unreadable_part_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = VectorCache(tmp_path / "enc", dim=2)
    cache.add(["a"], np.ones((1, 2), np.float32))

    def crash(file, **arrays):  # noqa: ANN001, ANN003, ANN202
        file.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    with monkeypatch.context() as mp:
        mp.setattr(np, "savez", crash)
        with pytest.raises(OSError, match="disk full"):
            cache.add(["b"], np.ones((1, 2), np.float32))
    assert len(cache.parts()) == 1 and sorted(p.name for p in cache.folder.iterdir()) == [cache.parts()[0].name]
    (cache.folder / "part-99999999999999999999-broken.npz").write_bytes(b"not a zip")
    found, got = cache.lookup(["a", "b"])
    assert found.tolist() == [True, False] and got[0].tolist() == [1.0, 1.0]
    assert "part-99999999999999999999-broken.npz is skipped" in caplog.text


def test_the_cache_is_under_the_workdir_unless_set_or_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_WORKDIR", str(tmp_path / "work"))
    assert cache_root(TextConfig()) == (tmp_path / "work" / "cache" / "text").resolve()
    assert cache_root(TextConfig(cache_dir=str(tmp_path / "mine"))) == tmp_path / "mine"
    assert cache_root(TextConfig(cache_dir="off")) is None
