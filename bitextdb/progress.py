"""Progress bars (tqdm on stderr) with a silent mode; the library reports, the CLI draws."""

from __future__ import annotations

from tqdm import tqdm

UNITS = {"ingest": "sent", "search": "vec", "encode": "sent"}


class ProgressBars:
    """One bar per stage, fed by ``update(stage, done, total)`` callbacks."""

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self._bars: dict[str, tqdm] = {}

    def update(self, stage: str, done: int, total: int) -> None:
        if self.disable:
            return
        bar = self._bars.get(stage)
        if bar is None:
            bar = tqdm(
                total=total or None,
                desc=stage,
                unit=UNITS.get(stage, "it"),
                unit_scale=True,
                leave=False,
                disable=None,
                dynamic_ncols=True,
            )
            self._bars[stage] = bar
        if total and bar.total != total:
            bar.total = total
        bar.update(max(0, done - bar.n))

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
