"""Champion against challenger online: which variant answers a request, and what each one served.

A request goes to the challenger when the stable hash of its user (`split_unit`: ``user_id``, else
``request_id``) falls below ``challenger_share`` (`bucket`: SHA-256 of a fixed salt and the id, read as a
number in [0, 1)). The same user always lands in the same variant, across requests, restarts and
machines, and raising the share only moves users from the champion to the challenger, never back.

`ServedCounts` counts the responses of each variant (shown by ``/health``); `ExposureLog` appends each
served decision to a JSONL file, the user as a `registry.privacy.pseudonym` (never the raw id), rotated
past a size. `recsys_tasks.report.variants` joins that log with the interactions that followed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from recsys_tasks.registry.privacy import pseudonym

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "KEY_CHECK",
    "VARIANTS",
    "ExposureLog",
    "ServedCounts",
    "bucket",
    "exposure_record",
    "split_unit",
    "variant_of",
]

CHAMPION, CHALLENGER = "champion", "challenger"
VARIANTS = (CHAMPION, CHALLENGER)
SALT = b"recsys-variant-split/v1:"  # changing it reshuffles every user between the variants
KEY_CHECK = "recsys-exposure-log/key-check"  # its pseudonym in each record tells which key wrote the log


def bucket(unit: str) -> float:
    """The id's place in [0, 1): the first 8 bytes of SHA-256(salt + id) over 2^64 (uniform, stable)."""
    digest = hashlib.sha256(SALT + unit.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_unit(request: Mapping[str, Any]) -> str | None:
    """What a request is split by: its user, else the request itself; None when it names neither."""
    return str(request.get("user_id") or "") or str(request.get("request_id") or "") or None


def variant_of(request: Mapping[str, Any], share: float) -> str:
    """``challenger`` when the request's unit hashes below ``share``; ``champion`` otherwise (and without a unit)."""
    unit = split_unit(request)
    if unit is None or share <= 0:
        return CHAMPION
    return CHALLENGER if bucket(unit) < share else CHAMPION


class ServedCounts:
    """Responses served per variant and model version since the start (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, variant: str, version: str, n: int = 1) -> None:
        with self._lock:
            self._counts[variant, version] = self._counts.get((variant, version), 0) + n

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{variant: {"served": total, "by_version": {version: n}}}`` for both variants."""
        with self._lock:
            counts = dict(self._counts)
        out: dict[str, dict[str, Any]] = {v: {"served": 0, "by_version": {}} for v in VARIANTS}
        for (variant, version), n in sorted(counts.items()):
            entry = out.setdefault(variant, {"served": 0, "by_version": {}})
            entry["served"] += n
            entry["by_version"][version] = n
        return out


def exposure_record(request: Mapping[str, Any], response: Mapping[str, Any], at: float) -> dict[str, Any]:
    """One served decision as logged: no raw id (the user as its pseudonym; null for a request without one)."""
    user = str(request.get("user_id") or "")
    return {
        "ts": round(at, 3),
        "variant": response["variant"],
        "model_version": str(response.get("model_version", "")),
        "user": pseudonym(user) if user else None,
        "items": [str(item["item_id"]) for item in response.get("items", [])],
        "key": pseudonym(KEY_CHECK),
    }


class ExposureLog:
    """Appends one JSON line per served response to ``path``; past ``max_bytes`` the file is rotated to
    ``path.1`` .. ``path.<backups>`` (the oldest dropped), so the log never holds more than
    (backups + 1) x max_bytes. Thread-safe (`logging.handlers.RotatingFileHandler`)."""

    def __init__(self, path: str | Path, max_bytes: int, backups: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger = logging.Logger(f"recsys.exposures.{self.path}", logging.INFO)  # not in the logging tree
        self._logger.propagate = False
        self._logger.addHandler(self._handler)

    def write(self, requests: Sequence[Mapping[str, Any]], responses: Sequence[Mapping[str, Any]]) -> None:
        at = time.time()
        for request, response in zip(requests, responses):
            self._logger.info(json.dumps(exposure_record(request, response, at), separators=(",", ":")))

    def close(self) -> None:
        """Close the file (a later write opens it again)."""
        self._handler.close()
