"""Progress bars for one request's stages (tqdm on stderr), or nothing when silent."""

from __future__ import annotations

from tqdm.auto import tqdm


class Progress:
    """One bar at a time: `start` a stage, `update` it, `close` it."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None

    @classmethod
    def off(cls) -> Progress:
        return cls(False)

    def start(self, stage: str, total: int, unit: str) -> None:
        self.close()
        if self.enabled:
            self._bar = tqdm(total=total, desc=stage, unit=unit, leave=False)

    def total(self, n: int | None) -> None:
        """The bar's total, once known (a stream's coarse stage learns it when its semantic run ends)."""
        if self._bar is not None and n is not None and self._bar.total != n:
            self._bar.total = n
            self._bar.refresh()

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def reporter(self):
        """A callback that moves the bar to a count (None when silent): for work the engine runs."""
        if not self.enabled:
            return None
        return lambda n: self._bar is not None and self._bar.update(n - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
