"""The log that makes items added over the API outlive the process (`CatalogLog`).

Every accepted item is appended to a JSON-lines log under the workdir, with its text vector
(float32, base64) and the text model that made it, so a restart, or a new champion, replays the
log instead of re-encoding (a different text model re-encodes). Only JSON is read back: nothing
is unpickled or evaluated. The log is compacted when the server loads it (`compact`) and again
whenever a write leaves it more than twice as long as its live lines: an item posted many times
is kept once, as last written, so the file stays within twice one line per distinct item id
however often items are replaced, and `item_ids` (the ids it holds) is what the cap on added
items counts. A compaction rewrites line numbers, so a position in the log (`LogPosition`) names
the rewrite it counts in.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["CatalogLog", "LogPosition"]

log = logging.getLogger(__name__)


class LogPosition(NamedTuple):
    """How far the log was read: ``lines`` lines of the file as rewritten ``generation`` times."""

    generation: int
    lines: int


class CatalogLog:
    """Append-only JSON lines, one per accepted item: its record, text model and text vector."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.item_ids: set[str] = set()  # every item id in the log (filled by `read` and `append`)
        self.generation = 0  # compactions that rewrote the file in this process
        self._lines: int | None = None  # lines in the file (None: not counted yet)

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
            if self._lines is None:
                self._lines = sum(1 for _ in self._text().splitlines())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.writelines(lines)
                handle.flush()
                os.fsync(handle.fileno())
            self._lines += len(lines)
            self.item_ids.update(str(r["item_id"]) for r in records)
            if self._lines > 2 * len(self.item_ids):  # replacements piled up: amortised, one rewrite per doubling
                self._compact()

    def read(self, start: LogPosition | None = None) -> tuple[list[dict[str, Any]], LogPosition]:
        """Entries after ``start`` (all of them when the log was compacted since), and the position to
        pass as ``start`` next time.

        A line that does not parse (a write cut short by a crash) is skipped with a warning.
        """
        with self._lock:
            text, generation = self._text(), self.generation
        skip = start.lines if start is not None and start.generation == generation else 0
        entries, count = [], 0
        for count, line in enumerate(text.splitlines(), start=1):
            if count <= skip:
                continue
            entry = self._parse(line, count)
            if entry is not None:
                entries.append(entry)
        with self._lock:
            self.item_ids.update(str(e["item"]["item_id"]) for e in entries)
        return entries, LogPosition(generation, max(count, skip))

    def compact(self) -> int:
        """Rewrite the log with one line per item id (its last), dropping lines that do not parse;
        atomically (a temporary file, then a rename). Returns the number of lines dropped."""
        with self._lock:
            return self._compact()

    def _compact(self) -> int:
        """`compact`, the lock held."""
        if not self.path.exists():
            self._lines = 0
            return 0
        lines = self._text().splitlines()
        last: dict[str, str] = {}
        for number, line in enumerate(lines, start=1):
            entry = self._parse(line, number)
            if entry is not None:
                item_id = str(entry["item"]["item_id"])
                last.pop(item_id, None)  # re-inserted: the order of last writes
                last[item_id] = line
        self.item_ids = set(last)
        self._lines = len(lines)
        dropped = len(lines) - len(last)
        if dropped:
            temporary = self.path.with_name(self.path.name + ".compacting")
            with temporary.open("w", encoding="utf-8") as handle:
                handle.writelines(line + "\n" for line in last.values())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)  # a crash leaves the old log or the new one, never half of one
            _fsync_dir(self.path.parent)  # the rename itself survives a crash
            self._lines, self.generation = len(last), self.generation + 1
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

    def _text(self) -> str:
        """The whole file ("" before the first write); called with the lock held."""
        return self.path.read_text(encoding="utf-8") if self.path.exists() else ""


def _fsync_dir(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
