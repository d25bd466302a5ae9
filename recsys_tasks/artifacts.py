"""Stage outputs: atomic directories and the `StageResult` every stage returns."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StageResult:
    """What a stage produced: its directory, named artifact paths and scalar metrics.

    Small and JSON-able on purpose: Airflow passes it through XCom as a dict. In memory its paths are
    absolute; its ``result.json`` holds those inside ``out_dir`` relative to it, so a moved or copied
    directory still loads (`load` resolves them against where the directory is now).
    """

    stage: str
    out_dir: str
    artifacts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return Path(self.artifacts[name])

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageResult:
        return cls(**data)

    @classmethod
    def load(cls, out_dir: str | Path) -> StageResult:
        """The result saved in ``out_dir``, its relative paths resolved against ``out_dir`` as it is now."""
        data = json.loads((Path(out_dir) / "result.json").read_text())
        base = Path(out_dir)
        artifacts = {k: v if Path(v).is_absolute() else str(base / v) for k, v in data.get("artifacts", {}).items()}
        return cls.from_dict({**data, "out_dir": str(base), "artifacts": artifacts})


@contextmanager
def atomic_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``out_dir``; on success it replaces ``out_dir``.

    A crash or an exception leaves ``out_dir`` as it was (absent or the previous complete
    output), never half written.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def finish(result: StageResult, tmp_dir: Path) -> StageResult:
    """Write ``result.json`` into the temporary directory; return the result with paths rebased to the final one.

    In the file, paths inside the directory are relative to it (``"bundle"``, ``"items.npy"``) and
    ``out_dir`` is ``"."``: the directory can be moved or copied and `StageResult.load` still finds them.
    Paths elsewhere stay as they are.
    """
    final = Path(result.out_dir)
    found = {k: _under(Path(v), (tmp_dir, final)) for k, v in result.artifacts.items()}
    inside = {k: v for k, v in found.items() if v is not None}
    rebased = {k: str(final / inside[k]) if k in inside else v for k, v in result.artifacts.items()}
    stored = {k: inside[k].as_posix() if k in inside else v for k, v in result.artifacts.items()}
    out = StageResult(result.stage, str(final), rebased, result.metrics, result.info)
    write_json(tmp_dir / "result.json", {**out.to_dict(), "out_dir": ".", "artifacts": stored})
    return out


def _under(path: Path, roots: tuple[Path, ...]) -> Path | None:
    """``path`` relative to the first of ``roots`` it lies in, or None."""
    return next((path.relative_to(root) for root in roots if path.is_relative_to(root)), None)


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars (an array's .item() fails for size > 1)
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
