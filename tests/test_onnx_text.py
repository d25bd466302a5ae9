"""The serving path for new sentences: a text encoder exported to ONNX, run by ONNX Runtime.

Real export, real runtime, of the tiny random BERT (conftest's ``tiny_bert``): whether the graph
reproduces PyTorch does not depend on how good the encoder is. Its graph is exported once for the
module into a folder of its own, so that folder holds that graph alone. One test runs the packaged
all-MiniLM-L6-v2, what serving runs by default, through both graphs.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from recsys_tasks.text import onnx as onnx_text
from recsys_tasks.text.encoder import TextEncoder
from recsys_tasks.text.onnx import OnnxExportError, OnnxTextEncoder, sentence_encoder

pytestmark = pytest.mark.slow

TEXTS = [
    "Hi.",
    "",
    "I like owls.",
    "I like Sci-Fi and Thriller movies, especially about trains (#7).",
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "A much longer sentence about a space opera with robots, lasers, a lost princess and a smuggler. " * 8,
]


@pytest.fixture(scope="module")
def torch_encoder(tiny_bert: str) -> TextEncoder:
    return TextEncoder(tiny_bert, device="cpu")


@pytest.fixture(scope="module")
def onnx_encoder(torch_encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory) -> OnnxTextEncoder:
    return OnnxTextEncoder(torch_encoder, tmp_path_factory.mktemp("onnx-tiny-bert"))


def test_onnx_runtime_gives_the_vectors_of_pytorch(onnx_encoder: OnnxTextEncoder, torch_encoder: TextEncoder) -> None:
    expected = torch_encoder.encode(TEXTS)  # the vectors the text stage stores (equal-length batches, no padding)
    np.testing.assert_allclose(onnx_encoder.encode_padded(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(onnx_encoder.encode(TEXTS[3:4]), expected[3:4], atol=1e-5)
    with ThreadPoolExecutor(3) as pool:  # lanes share one session
        parts = list(pool.map(onnx_encoder.encode_padded, [TEXTS[:2], TEXTS[2:4], TEXTS[4:]] * 3))
    np.testing.assert_allclose(np.vstack(parts[:3]), expected, atol=1e-5)
    assert onnx_encoder.encode_padded([]).shape == (0, torch_encoder.dim)


def test_the_exported_graph_is_reused(
    onnx_encoder: OnnxTextEncoder, torch_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports: list[Path] = []
    monkeypatch.setattr(onnx_text, "_export", lambda encoder, path: exports.append(path))
    again = OnnxTextEncoder(torch_encoder, onnx_encoder.path.parent)
    assert exports == [] and again.path == onnx_encoder.path
    assert [p.name for p in onnx_encoder.path.parent.iterdir()] == [onnx_encoder.path.name]  # no temporary left


def test_a_damaged_graph_is_exported_again(
    onnx_encoder: OnnxTextEncoder, torch_encoder: TextEncoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = tmp_path / onnx_encoder.path.name
    damaged.write_bytes(onnx_encoder.path.read_bytes()[: 1 << 20])  # a cut-off copy
    with caplog.at_level(logging.WARNING, logger="recsys_tasks.text.onnx"):
        encoder = OnnxTextEncoder(torch_encoder, tmp_path)
    assert "exporting the text encoder again" in caplog.text and "cannot load" in caplog.text
    assert damaged.stat().st_size == onnx_encoder.path.stat().st_size
    np.testing.assert_allclose(encoder.encode_padded(TEXTS[:3]), torch_encoder.encode(TEXTS[:3]), atol=1e-5)


def test_a_graph_that_disagrees_with_pytorch_is_not_served(
    onnx_encoder: OnnxTextEncoder,
    tiny_bert: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A graph whose vectors differ (here: exported from other weights) is replaced; if the fresh
    export differs too, serving falls back to PyTorch and says why."""
    monkeypatch.setattr(onnx_text, "_fingerprint", lambda encoder: onnx_encoder.path.stem)
    os.link(onnx_encoder.path, tmp_path / onnx_encoder.path.name)
    monkeypatch.setattr(onnx_text, "TOLERANCE", -1.0)  # nothing agrees
    monkeypatch.setattr(onnx_text, "_export", lambda encoder, path: None)
    with caplog.at_level(logging.WARNING, logger="recsys_tasks.text.onnx"):
        encoder = sentence_encoder(tiny_bert, "onnx", tmp_path)
    assert isinstance(encoder, TextEncoder)
    assert "differs from PyTorch" in caplog.text and "serving with PyTorch, not ONNX Runtime" in caplog.text


def test_a_model_that_cannot_be_exported_is_served_by_pytorch(
    tiny_bert: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(encoder: TextEncoder, path: Path) -> None:
        raise OnnxExportError("torch.onnx.export failed for 'packaged': UnsupportedOperatorError: aten::frobnicate")

    monkeypatch.setattr(onnx_text, "_export", fail)
    with caplog.at_level(logging.WARNING, logger="recsys_tasks.text.onnx"):
        encoder = sentence_encoder(tiny_bert, "onnx", tmp_path)
    assert isinstance(encoder, TextEncoder) and getattr(encoder, "runtime", "torch") == "torch"
    assert "aten::frobnicate" in caplog.text
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_the_runtime_is_checked(tiny_bert: str) -> None:
    with pytest.raises(ValueError, match="text runtime 'tensorrt': expected one of"):
        sentence_encoder("packaged", "tensorrt", None)
    with pytest.raises(ValueError, match="needs a cache folder"):
        sentence_encoder("packaged", "onnx", None)
    with pytest.raises(ValueError, match="onnx-int8 text runtime needs a cache folder"):
        sentence_encoder("packaged", "onnx-int8", None)
    assert isinstance(sentence_encoder(tiny_bert, "torch", None), TextEncoder)


def test_the_int8_graph_is_quantized_from_the_checked_one_and_stays_close_to_pytorch(
    onnx_encoder: OnnxTextEncoder,
    tiny_bert: str,
    torch_encoder: TextEncoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    os.link(onnx_encoder.path, tmp_path / onnx_encoder.path.name)  # the fp32 graph is there: checked, not exported
    monkeypatch.setattr(onnx_text, "_export", lambda encoder, path: pytest.fail("exported again"))
    with caplog.at_level(logging.INFO):
        int8 = sentence_encoder(tiny_bert, "onnx-int8", tmp_path)
    assert "quantized the text encoder graph" in caplog.text
    assert "pre-processing" not in caplog.text  # the quantizer's hint (on the root logger) is not the server's log
    assert isinstance(int8, OnnxTextEncoder) and int8.runtime == "onnx-int8" and int8.path.name.endswith(".int8.onnx")
    assert int8.path.stat().st_size < onnx_encoder.path.stat().st_size / 2  # int8 weights
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [onnx_encoder.path.name, int8.path.name]
    )  # no temporary
    expected, vectors = torch_encoder.encode(TEXTS), int8.encode_padded(TEXTS)
    cosines = (vectors * expected).sum(1)
    assert cosines.min() > onnx_text.INT8_MIN_COSINE and cosines.mean() > 0.9
    assert np.abs(vectors - expected).max() > onnx_text.TOLERANCE  # not the fp32 graph under another name
    np.testing.assert_allclose(int8.encode(TEXTS), expected, atol=1e-5)  # item texts: the fp32 graph's vectors
    monkeypatch.setattr(onnx_text, "_quantize", lambda fp32, path: pytest.fail("quantized again"))
    again = OnnxTextEncoder(torch_encoder, tmp_path, quantized=True)  # reused
    np.testing.assert_array_equal(again.encode_padded(TEXTS), vectors)


def test_an_int8_graph_below_the_cosine_floor_is_not_served(
    onnx_encoder: OnnxTextEncoder,
    tiny_bert: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    os.link(onnx_encoder.path, tmp_path / onnx_encoder.path.name)
    monkeypatch.setattr(onnx_text, "INT8_MIN_COSINE", 1.01)  # nothing reaches it
    with caplog.at_level(logging.WARNING, logger="recsys_tasks.text.onnx"):
        encoder = sentence_encoder(tiny_bert, "onnx-int8", tmp_path)
    assert isinstance(encoder, TextEncoder)
    assert "is at cosine" in caplog.text and "serving with PyTorch, not ONNX Runtime" in caplog.text


def test_the_packaged_encoder_runs_under_onnx_runtime_fp32_and_int8(onnx_cache: Path, tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2, what serving runs by default: its fp32 graph (exported once per session
    into ``RECSYS_ONNX_DIR``) gives PyTorch's vectors, and its int8 graph stays above the cosine floor."""
    packaged = TextEncoder(device="cpu")
    fp32 = OnnxTextEncoder(packaged, onnx_cache)
    expected = packaged.encode(TEXTS)
    np.testing.assert_allclose(fp32.encode_padded(TEXTS), expected, atol=1e-5)
    os.link(fp32.path, tmp_path / fp32.path.name)  # quantized here: the session's folder keeps its fp32 graphs only
    int8 = OnnxTextEncoder(packaged, tmp_path, quantized=True)
    cosines = (int8.encode_padded(TEXTS) * expected).sum(1)
    assert cosines.min() > onnx_text.INT8_MIN_COSINE and cosines.mean() > 0.9
