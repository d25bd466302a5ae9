"""The training step's arithmetic: float32, or bfloat16 autocast where the hardware computes it natively.

Under bfloat16 autocast the matrix products (the towers' linear layers, the logits) run in bfloat16 while the
weights, the optimizer's state, the embeddings and the loss stay float32 (docs/decisions/0022-bfloat16-step.md).
Where the hardware lacks bfloat16 it is emulated and slower than float32, so "auto" keeps float32 there.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISIONS", "autocast", "step_dtype"]

PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":  # private probes, so read defensively: absent means no
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def step_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the step's matrix products run in for ``finetune.precision`` on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    if precision == "bfloat16" or (precision == "auto" and native_bfloat16(device)):
        return torch.bfloat16
    return torch.float32


def autocast(dtype: torch.dtype, device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which the step runs at ``dtype`` (float32: nothing changes)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
