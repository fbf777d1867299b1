"""A small staged pipeline: each stage runs in its own thread, joined by bounded queues.

Ingest uses it so that reading and SQL, encoding (the GPU) and the vector upserts overlap
instead of taking turns; the queues bound how far one stage may run ahead (memory).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def run_stages(
    items: Iterable[Any], stages: list[Callable[[Any], Any]], *, depth: int = 2
) -> Iterator[Any]:
    """Feed ``items`` through ``stages`` (each in a thread); yield the last stage's results.

    Order is kept. The first exception of any stage stops the pipeline and is raised here.
    """
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
        try:
            for item in items:
                if not put(queues[0], item):
                    return
        except BaseException as exc:
            put(queues[0], _Failed(exc))
        put(queues[0], _DONE)

    def work(fn: Callable[[Any], Any], inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        while not stop.is_set():
            try:
                item = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE or isinstance(item, _Failed):
                put(outbox, item)
                return
            try:
                result = fn(item)
            except BaseException as exc:
                put(outbox, _Failed(exc))
                return
            if not put(outbox, result):
                return

    threads = [threading.Thread(target=feed, name="bitextdb-feed", daemon=True)]
    threads += [
        threading.Thread(
            target=work,
            args=(fn, queues[i], queues[i + 1]),
            name=f"bitextdb-stage{i}",
            daemon=True,
        )
        for i, fn in enumerate(stages)
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
