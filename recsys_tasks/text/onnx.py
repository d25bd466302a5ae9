"""The sentence encoder as an ONNX graph run by ONNX Runtime: the API's path for new sentences.

Serving encodes a few sentences at a time on one CPU thread, where eager PyTorch spends most
of its time in per-operator overhead; ONNX Runtime does not (docs/decisions/0008-onnx-int8-for-sentences-only.md,
figures in docs/benchmarks.md). The graph is the encoder plus the same mean pooling and L2
normalisation as `TextEncoder.pool`, exported once by ``torch.onnx.export`` (the dynamo exporter:
dynamic batch and length) and kept in a cache folder under a name derived from the weights, so a
restart loads it in a second. It is checked against PyTorch on probe sentences every time it is
loaded; a graph that disagrees is exported again, and a model that cannot be exported is served by
PyTorch (`sentence_encoder` logs why).

"onnx-int8" (opt-in) serves sentences through the same graph with its weights quantized to int8
(``onnxruntime.quantization.quantize_dynamic``, cached beside it): faster, at a small cost in
fidelity. Item texts stay on the fp32 graph (`encode`): they feed the content map, where int8
vectors cost new items more than int8 sentences cost anyone. Its check is a cosine floor
(``INT8_MIN_COSINE``), not the fp32 graph's tolerance.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys_tasks.text.encoder import TextEncoder

log = logging.getLogger(__name__)

RUNTIMES = ("onnx", "onnx-int8", "torch")
TOLERANCE = 1e-4  # max |difference| of a pooled, unit-length vector between the graph and PyTorch
INT8_MIN_COSINE = 0.8  # the quantized graph's floor, per probe sentence (below what int8 gives the bundle's sentences)
PROBES = (
    "warm up",
    "I like Sci-Fi and Thriller movies.",
    "A quiet drama about two brothers who inherit a failing vineyard in the Napa Valley, 1998.",
)
_EXPORT_VERSION = "1"  # part of the cache key: bump when the exported graph changes


class OnnxExportError(RuntimeError):
    """The encoder could not be exported, or its graph does not reproduce PyTorch's vectors."""


class OnnxTextEncoder:
    """`TextEncoder.encode_padded`'s vectors from an ONNX Runtime session (thread-safe: several
    lanes may run it at once); tokenization stays the encoder's own (`padded_groups`)."""

    def __init__(self, encoder: TextEncoder, cache_dir: str | Path, threads: int = 1, quantized: bool = False):
        self.encoder, self.dim, self.name = encoder, encoder.dim, encoder.name
        self.quantized, self.runtime = quantized, "onnx-int8" if quantized else "onnx"
        # int8: the checked fp32 graph too, for item texts and to quantize from
        self._fp32: OnnxTextEncoder = OnnxTextEncoder(encoder, cache_dir, threads) if quantized else self
        self.path: Path = (
            self._fp32.path.with_suffix(".int8.onnx")
            if quantized
            else Path(cache_dir) / f"{_fingerprint(encoder)}.onnx"
        )
        if self.path.exists():
            try:
                self._load(threads)
                return
            except OnnxExportError as exc:  # a damaged or stale file: export it again
                log.warning("exporting the text encoder again: %s", exc)
        if quantized:
            _quantize(self._fp32.path, self.path)
        else:
            _export(encoder, self.path)
        self._load(threads)

    def encode_padded(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for idx, ids, mask in self.encoder.padded_groups(texts):
            out[idx] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Item texts (POST /items), a few at a time as sentences; through the fp32 graph where sentences
        go through int8: a new item's text vector feeds the content map, where int8 costs new items
        more than int8 costs sentences (docs/decisions/0008-onnx-int8-for-sentences-only.md)."""
        return self._fp32.encode_padded(texts)

    def _load(self, threads: int) -> None:
        """Open the graph and check it against PyTorch on the probe sentences."""
        self.session = _session(self.path, threads)
        ours, theirs = self.encode_padded(PROBES), self.encoder.encode_padded(PROBES)
        if self.quantized:
            cosine = float((ours * theirs).sum(1).min())  # both unit length
            if not cosine >= INT8_MIN_COSINE:
                raise OnnxExportError(
                    f"the int8 ONNX graph {self.path} of {self.name!r} is at cosine {cosine:.3g} to "
                    f"PyTorch's vectors (floor {INT8_MIN_COSINE})"
                )
            return
        error = float(np.abs(ours - theirs).max())
        if not error <= TOLERANCE:
            raise OnnxExportError(
                f"the ONNX graph {self.path} of {self.name!r} differs from PyTorch by {error:.3g} "
                f"(tolerance {TOLERANCE})"
            )


def sentence_encoder(
    text_model: str, runtime: str = "onnx", cache_dir: str | Path | None = None, threads: int = 1
) -> TextEncoder | OnnxTextEncoder:
    """The encoder serving uses for ``text_model``: ONNX Runtime when ``runtime`` is "onnx" (or
    "onnx-int8": quantized) and the model exports faithfully (else PyTorch, with a warning that says
    why), or PyTorch."""
    if runtime not in RUNTIMES:
        raise ValueError(f"text runtime {runtime!r}: expected one of {list(RUNTIMES)}")
    if runtime == "torch":
        return TextEncoder(text_model, device="cpu")
    if cache_dir is None:
        raise ValueError(f"the {runtime} text runtime needs a cache folder for the exported graph")
    encoder = TextEncoder(text_model, device="cpu")
    try:
        return OnnxTextEncoder(encoder, cache_dir, threads, quantized=runtime == "onnx-int8")
    except (ImportError, OnnxExportError, OSError) as exc:
        log.warning("text model %r: serving with PyTorch, not ONNX Runtime: %s", text_model, exc)
        return encoder


def _fingerprint(encoder: TextEncoder) -> str:
    """sha256 of the weights, the configuration, the tokenizer's length limit and the exporter."""
    import torch

    digest = hashlib.sha256(f"{_EXPORT_VERSION} {torch.__version__} {encoder.max_length}".encode())
    digest.update(encoder.model.config.to_json_string().encode())
    for name, tensor in encoder.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def _export(encoder: TextEncoder, path: Path) -> None:
    """The encoder with pooling, as ONNX, written to a temporary file and renamed into ``path``."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    example = encoder.tokenizer(
        ["an example sentence to trace the graph with", "another"], padding=True, return_tensors="pt"
    )
    ids, mask = example["input_ids"].long(), example["attention_mask"].long()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=encoder.max_length)
    with _written(path, f"torch.onnx.export failed for {encoder.name!r}") as tmp:
        with torch.inference_mode(False), torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                Pooled(encoder.model).eval(),
                (ids, mask),
                input_names=["input_ids", "attention_mask"],
                output_names=["sentence_vector"],
                dynamic_shapes={"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}},
                dynamo=True,
                optimize=True,
                verbose=False,
            )
        program.save(tmp)
    log.info("exported the text encoder %r to %s", encoder.name, path)


def _quantize(fp32: Path, path: Path) -> None:
    """``fp32``'s graph with int8 weights (dynamic quantization: activations quantized per call),
    written to a temporary file and renamed into ``path``."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxExportError(f"onnxruntime.quantization is not available: {exc}") from exc
    with _written(path, f"quantizing {fp32} failed") as tmp, _quiet_exporter():
        quantize_dynamic(str(fp32), tmp, weight_type=QuantType.QInt8)
    log.info("quantized the text encoder graph %s to %s", fp32, path)


@contextlib.contextmanager
def _written(path: Path, failure: str):
    """A temporary file beside ``path`` to write, renamed into it if the block succeeds, removed
    whatever happens; an exception of the block becomes `OnnxExportError` (``failure``: what failed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except Exception as exc:  # the exporter and the quantizer raise many kinds; the caller falls back to PyTorch
        raise OnnxExportError(f"{failure}: {type(exc).__name__}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's and the quantizer's notices (deprecations, "torchvision is not installed",
    rename hints, "consider pre-processing") are not the server's business: silenced for the export
    only. The quantizer logs on the root logger itself: a filter there drops only what is logged on it
    directly, not what other loggers propagate to it."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    root = logging.getLogger()
    drop = lambda record: record.levelno >= logging.ERROR  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        root.addFilter(drop)
        try:
            yield
        finally:
            root.removeFilter(drop)
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _session(path: Path, threads: int):
    """An ONNX Runtime session on ``threads`` CPU threads; `OnnxExportError` if the file does not load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not burn the CPU
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types (Fail, InvalidGraph, ...) share no base
        raise OnnxExportError(f"ONNX Runtime cannot load {path}: {exc}") from exc
