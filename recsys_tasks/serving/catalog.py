"""The log that makes items added over the API outlive the process (`CatalogLog`).

Every accepted item is appended to a JSON-lines log under the workdir, with its text vector
(float32, base64) and the text model that made it, so a restart, or a new champion, replays the
log instead of re-encoding (a different text model re-encodes). Only JSON is read back: nothing
is unpickled or evaluated. The log is compacted when the server loads it (`compact`): an item
posted many times is kept once, as last written, so the file holds at most one line per
distinct item id, and `item_ids` (the ids it holds) is what the cap on added items counts.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CatalogLog"]

log = logging.getLogger(__name__)


class CatalogLog:
    """Append-only JSON lines, one per accepted item: its record, text model and text vector."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.item_ids: set[str] = set()  # every item id in the log (filled by `read` and `append`)

    def append(self, records: list[dict[str, Any]], text_model: str, vectors: np.ndarray) -> None:
        """Write and fsync before the items are served, so an acknowledged item survives a crash."""
        lines = [
            json.dumps(
                {
                    "item": r,
                    "text_model": text_model,
                    "at": time.time(),
                    "vector": base64.b64encode(np.asarray(v, "<f4").tobytes()).decode("ascii"),
                },
                default=_plain,
            )
            + "\n"
            for r, v in zip(records, vectors)
        ]
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.writelines(lines)
                handle.flush()
                os.fsync(handle.fileno())
            self.item_ids.update(str(r["item_id"]) for r in records)

    def read(self, start: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Entries from line ``start`` on, and the line count to pass as ``start`` next time.

        A line that does not parse (a write cut short by a crash) is skipped with a warning.
        """
        entries, count = [], 0
        for count, line in enumerate(self._lines(), start=1):
            if count <= start:
                continue
            entry = self._parse(line, count)
            if entry is not None:
                entries.append(entry)
        with self._lock:
            self.item_ids.update(str(e["item"]["item_id"]) for e in entries)
        return entries, max(count, start)

    def compact(self) -> int:
        """Rewrite the log with one line per item id (its last), dropping lines that do not parse;
        atomically (a temporary file, then a rename). Returns the number of lines dropped."""
        with self._lock:
            if not self.path.exists():
                return 0
            lines = self.path.read_text(encoding="utf-8").splitlines()
            last: dict[str, str] = {}
            for number, line in enumerate(lines, start=1):
                entry = self._parse(line, number)
                if entry is not None:
                    item_id = str(entry["item"]["item_id"])
                    last.pop(item_id, None)  # re-inserted: the order of last writes
                    last[item_id] = line
            self.item_ids = set(last)
            dropped = len(lines) - len(last)
            if dropped:
                temporary = self.path.with_name(self.path.name + ".compacting")
                with temporary.open("w", encoding="utf-8") as handle:
                    handle.writelines(line + "\n" for line in last.values())
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.path)
                log.info("%s: compacted, %d lines dropped, %d items kept", self.path, dropped, len(last))
            return dropped

    def _parse(self, line: str, number: int) -> dict[str, Any] | None:
        try:
            entry = json.loads(line)
            entry["vector"] = np.frombuffer(base64.b64decode(entry["vector"]), "<f4").astype(np.float32)
            if "item_id" not in entry["item"]:
                raise KeyError("item_id")
            return entry
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s, line %d: skipped (%s)", self.path, number, exc)
            return None

    def _lines(self) -> Iterator[str]:
        with self._lock:
            if not self.path.exists():
                return iter(())
            text = self.path.read_text(encoding="utf-8")
        return iter(text.splitlines())


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
