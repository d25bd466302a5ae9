"""`Batcher`: work that arrives while a worker thread is busy is done together in its next pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

__all__ = ["Batcher"]


class Batcher:
    """Items submitted from the event loop, run in batches on ``executor``, off the loop.

    ``run(items) -> results`` (one result or exception per item) runs at most ``lanes`` calls at a
    time: no timer, so a lone request waits for nothing (a free lane takes it) and a crowd is served
    in batches of at most ``max_batch``. The loop only queues and hands out answers, so it stays
    free for other requests (``/health`` among them) while a batch is worked on. An item whose
    caller stopped waiting (its future cancelled) before its batch started is not run.
    """

    def __init__(self, run: Callable[[list], list], executor: Executor, max_batch: int, lanes: int = 1):
        self._run, self._executor, self._max_batch, self._lanes = run, executor, max_batch, lanes
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if len(self._tasks) < self._lanes:
            self._tasks.add(loop.create_task(self._drain()))
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                batch = [(item, future) for item, future in batch if not future.done()]  # not given up on (time budget)
                if not batch:
                    continue
                try:
                    results = await loop.run_in_executor(self._executor, self._run, [r for r, _ in batch])
                except Exception as exc:  # noqa: BLE001 (a bug, not bad input: every item of the batch gets a 500)
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)
        finally:  # at once, not in a done-callback: an item submitted meanwhile would find no lane free
            self._tasks.discard(asyncio.current_task())
