"""How the API serves (`ServeSettings`): the model it follows, its limits, and who may call it.

Closed by default: the API listens on loopback unless told otherwise, and refuses to be built
for any other interface without an API key (`InsecureServeError`), so a published port never
answers without credentials.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_tasks.config import PipelineConfig, tracking_uri, workdir
from recsys_tasks.model.index import IndexConfig

__all__ = ["InsecureServeError", "ServeSettings", "is_loopback"]


class InsecureServeError(ValueError):
    """The API was asked to listen beyond loopback without an API key."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ::1 (nothing off this machine reaches them)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # another host name: it may resolve to any interface
        return False


@dataclass(frozen=True)
class ServeSettings:
    """How the API serves; secrets and origins also from the environment (`from_env`)."""

    model_uri: str | None = None  # default models:/<model_name>@champion; an alias URI is followed
    model_name: str = field(default_factory=lambda: PipelineConfig().registry.model_name)
    workdir: str | None = None  # default RECSYS_WORKDIR; added items live in <workdir>/serving/
    tracking_uri: str | None = None  # default MLFLOW_TRACKING_URI, else the workdir's SQLite store
    host: str = "127.0.0.1"  # the interface it listens on: beyond loopback only with an api_key
    poll_seconds: float = 10.0  # how often the alias is checked; 0: never
    api_key: str | None = None  # when set, every endpoint but /health and the docs wants it in X-API-Key
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are named
    default_k: int = 20
    max_batch: int = 64  # requests scored in one pass
    max_batch_requests: int = 1000  # requests in one POST /recommend/batch
    max_body_bytes: int = 8 << 20
    max_added_items: int = 10_000  # distinct item ids POST /items may add or replace; past it: 409
    request_timeout_s: float = 30.0  # past it a request gets 503 + Retry-After, not a wait on a stuck model; 0: none
    sentence_cache_size: int = 10_000
    index: str = "auto"  # "auto": a FAISS index from index_min_items items on (if installed); "exact"; "faiss"
    index_min_items: int = IndexConfig.min_items
    index_nprobe: int = IndexConfig.nprobe
    torch_threads: int = 1  # torch's and FAISS' threads: small batches run fastest on one; 0: their default
    text_lanes: int = 2  # sentence-encoder passes at once: a new sentence need not wait for the pass before it
    gc_threshold: int = 10_000  # new objects between young-generation collections while serving (Python: 700); 0: as is
    text_runtime: str = "onnx"  # new sentences through ONNX Runtime, "onnx-int8" (quantized weights) or "torch"
    onnx_dir: str | None = None  # exported encoder graphs; default RECSYS_ONNX_DIR, else <workdir>/serving/onnx
    challenger_share: float = 0.0  # users (by a stable hash) answered by the `challenger` alias; 0: all by the champion
    exposure_log: str | None = None  # JSONL of each served decision (user pseudonymised); None: not logged
    exposure_log_max_bytes: int = 64 << 20  # past it the log is rotated to <log>.1 ...
    exposure_log_backups: int = 5  # rotated files kept (older ones dropped)

    def __post_init__(self) -> None:
        if not self.api_key and not is_loopback(self.host):
            raise InsecureServeError(
                f"refusing to serve on {self.host!r} without an API key: anyone who reaches that interface could "
                "call the API; set RECSYS_API_KEY, or listen on loopback (127.0.0.1, ::1, localhost)"
            )
        if self.max_added_items < 0:
            raise ValueError(f"max_added_items must be >= 0, got {self.max_added_items}")
        if not self.request_timeout_s >= 0:  # NaN too
            raise ValueError(f"request_timeout_s must be >= 0 (0: no budget), got {self.request_timeout_s}")
        share = self.challenger_share
        if (
            isinstance(share, bool)
            or not isinstance(share, (int, float))
            or not (math.isfinite(share) and 0 <= share <= 1)
        ):
            raise ValueError(
                f"challenger_share must be a number from 0 to 1 (the share of users the challenger answers), "
                f"got {share!r}"
            )
        if self.exposure_log_max_bytes < 1 or self.exposure_log_backups < 1:
            raise ValueError(
                "exposure_log_max_bytes and exposure_log_backups must be >= 1, got "
                f"{self.exposure_log_max_bytes} and {self.exposure_log_backups}"
            )

    @classmethod
    def from_env(cls, **values: Any) -> ServeSettings:
        """``RECSYS_API_KEY``, ``RECSYS_CORS_ORIGINS`` (comma-separated), ``RECSYS_CHALLENGER_SHARE`` and
        ``RECSYS_EXPOSURE_LOG``, then ``values``."""
        env: dict[str, Any] = {}
        if os.environ.get("RECSYS_API_KEY"):
            env["api_key"] = os.environ["RECSYS_API_KEY"]
        if os.environ.get("RECSYS_CORS_ORIGINS"):
            env["cors_origins"] = tuple(o.strip() for o in os.environ["RECSYS_CORS_ORIGINS"].split(",") if o.strip())
        if os.environ.get("RECSYS_CHALLENGER_SHARE", "").strip():
            text = os.environ["RECSYS_CHALLENGER_SHARE"].strip()
            try:
                env["challenger_share"] = float(text)
            except ValueError:
                raise ValueError(f"RECSYS_CHALLENGER_SHARE must be a number from 0 to 1, got {text!r}") from None
        if os.environ.get("RECSYS_EXPOSURE_LOG", "").strip():
            env["exposure_log"] = os.environ["RECSYS_EXPOSURE_LOG"].strip()
        return cls(**{**env, **{k: v for k, v in values.items() if v is not None}})

    def root(self) -> Path:
        return Path(self.workdir).resolve() if self.workdir else workdir()

    def store(self) -> str:
        return self.tracking_uri or tracking_uri(self.root())

    def onnx_folder(self) -> Path:
        folder = self.onnx_dir or os.environ.get("RECSYS_ONNX_DIR")
        return Path(folder) if folder else self.root() / "serving" / "onnx"
