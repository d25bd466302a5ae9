"""finetune's step precision (`model.precision`): what "auto" picks, and that a bfloat16 step is the float32
step up to bfloat16's rounding, with the loss and every gradient in float32 (tiny known-answer catalogue)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_tasks.config import ConfigError, PipelineConfig
from recsys_tasks.model import precision
from recsys_tasks.model.precision import autocast, native_bfloat16, step_dtype
from tests.test_training_step import N_ROWS, SPEC, _batch, _grads, _loss, _model

CPU = torch.device("cpu")


def test_float32_and_bfloat16_are_what_they_say_and_auto_follows_the_hardware(monkeypatch) -> None:
    assert step_dtype("float32", CPU) == torch.float32
    assert step_dtype("bfloat16", CPU) == torch.bfloat16
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: True)
    assert step_dtype("auto", CPU) == torch.bfloat16
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: False)
    assert step_dtype("auto", CPU) == torch.float32  # emulated bfloat16 would be slower than float32


def test_the_cpu_probe_answers_without_raising() -> None:
    assert isinstance(native_bfloat16(CPU), bool)
    assert native_bfloat16(torch.device("meta")) is False


def test_an_unknown_precision_is_a_config_error_that_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"finetune\.precision.*'half'.*'auto', 'float32' or 'bfloat16'"):
        PipelineConfig().with_overrides(["finetune.precision=half"])
    with pytest.raises(ValueError, match="half"):
        step_dtype("half", CPU)


@pytest.mark.parametrize("negatives", [0, 12])  # the full softmax, the sampled one
def test_a_bfloat16_step_is_the_float32_step_up_to_rounding_with_float32_loss_and_gradients(negatives) -> None:
    content = np.random.default_rng(1).normal(size=(N_ROWS, SPEC.content_dim)).astype(np.float32)
    batch = _batch()
    exact, mixed = _model(), _model()
    exact_loss = _loss(content, negatives=negatives, id_dropout=0.0)(exact, batch)
    with autocast(torch.bfloat16, CPU):
        mixed_loss = _loss(content, negatives=negatives, id_dropout=0.0)(mixed, batch)
    assert mixed_loss.dtype == torch.float32
    assert mixed_loss.item() == pytest.approx(exact_loss.item(), rel=2e-2)
    assert mixed_loss.item() != exact_loss.item()  # the products did run in bfloat16
    exact_loss.backward()
    mixed_loss.backward()
    a, b = _grads(exact), _grads(mixed)
    for name in ("item_id.weight", "user.0.weight", "item_content.0.weight"):
        assert b[name] is not None and b[name].dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(a[name].flatten(), b[name].flatten(), dim=0)
        assert cosine > 0.99, name


def test_float32_changes_nothing() -> None:
    with autocast(torch.float32, CPU):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
