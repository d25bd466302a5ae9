"""The report's charts: real PNGs of the frames they are drawn from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from recsys_tasks.plots import curves_chart, slice_chart

PNG = b"\x89PNG\r\n\x1a\n"


def _frame() -> pd.DataFrame:
    rows = [
        ("cold-user@0", "popularity", "baseline", 0.30),
        ("cold-user@0", "model", "model", 0.33),
        ("cold-item", "text_profile", "baseline", 0.10),
        ("cold-item", "model", "model", 0.13),
    ]
    return pd.DataFrame([{"slice": s, "ranker": r, "kind": k, "users": 10, "ndcg@20": v} for s, r, k, v in rows])


def _coloured_pixels(path: Path) -> int:
    """Pixels that are neither white-ish nor grey: bars and lines, not an empty canvas."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return int((spread > 60).sum())


def test_slice_chart_draws_every_ranker(tmp_path: Path) -> None:
    path = slice_chart(_frame(), tmp_path / "slices.png")
    assert path.read_bytes()[:8] == PNG
    assert _coloured_pixels(path) > 2000  # four bars and their legend swatches


def test_slice_chart_of_no_rows_is_an_empty_axis_not_an_error(tmp_path: Path) -> None:
    path = slice_chart(_frame().iloc[:0], tmp_path / "empty.png")
    assert path.read_bytes()[:8] == PNG


@pytest.mark.parametrize("columns", [["loss"], ["loss", "val_ndcg", "val_ndcg_k0"]])
def test_curves_chart_has_a_panel_per_column(tmp_path: Path, columns: list[str]) -> None:
    curves = pd.DataFrame({"epoch": [1, 2, 3], **{c: [3.0, 2.0, 1.5] for c in columns}})
    path = curves_chart(curves, tmp_path / "curves.png")
    width = Image.open(path).size[0]
    assert width == pytest.approx(4.2 * len(columns) * 110, abs=2)
    assert _coloured_pixels(path) > 100
