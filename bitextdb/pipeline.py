"""A small staged pipeline: each stage runs in its own thread, joined by bounded queues.

Ingest uses it so that reading and SQL, encoding (the GPU) and the vector upserts overlap
instead of taking turns; the queues bound how far one stage may run ahead (memory).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def run_stages(
    items: Iterable[Any],
    stages: list[Callable[[Any], Any]],
    *,
    depth: int = 2,
    busy: list[float] | None = None,
) -> Iterator[Any]:
    """Feed ``items`` through ``stages`` (each in a thread); yield the last stage's results.

    Order is kept. The first exception of any stage stops the pipeline and is raised here.
    ``busy``, when given, must have one slot more than ``stages``: slot 0 gets the seconds
    spent producing ``items``, slot ``i + 1`` those stage ``i`` spent working (not waiting
    on its queues), which shows which stage holds the others back.
    """
    if busy is not None and len(busy) != len(stages) + 1:
        raise ValueError("busy needs one slot for the items and one for each stage")
    seconds = busy if busy is not None else [0.0] * (len(stages) + 1)
    stop = threading.Event()
    queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=depth) for _ in range(len(stages) + 1)]

    def put(q: queue.Queue[Any], item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:
        source = iter(items)
        try:
            while True:
                started = time.perf_counter()
                item = next(source, _DONE)
                seconds[0] += time.perf_counter() - started
                if item is _DONE:
                    break
                if not put(queues[0], item):
                    return
        except BaseException as exc:
            put(queues[0], _Failed(exc))
        put(queues[0], _DONE)

    def work(slot: int, inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        fn = stages[slot - 1]
        while not stop.is_set():
            try:
                item = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE or isinstance(item, _Failed):
                put(outbox, item)
                return
            started = time.perf_counter()
            try:
                result = fn(item)
            except BaseException as exc:
                put(outbox, _Failed(exc))
                return
            finally:
                seconds[slot] += time.perf_counter() - started
            if not put(outbox, result):
                return

    threads = [threading.Thread(target=feed, name="bitextdb-feed", daemon=True)]
    threads += [
        threading.Thread(
            target=work,
            args=(i + 1, queues[i], queues[i + 1]),
            name=f"bitextdb-stage{i}",
            daemon=True,
        )
        for i in range(len(stages))
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = queues[-1].get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()
