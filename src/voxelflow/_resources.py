"""Measuring a stage: wall time and the peak resident memory of the process tree."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType


def _rss_tree() -> int:
    try:
        import psutil
    except ImportError:  # psutil is optional: fall back to this process's peak
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    process = psutil.Process(os.getpid())
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child may exit while we look
            total += child.memory_info().rss
    return int(total)


@dataclass
class Stage:
    """Context manager: ``seconds`` and ``peak_rss`` (bytes, sampled every 20 ms).

    Example:
        >>> from voxelflow._resources import Stage
        >>> with Stage("sleep") as stage:
        ...     pass
        >>> stage.seconds >= 0 and stage.peak_rss > 0
        True
    """

    name: str
    interval: float = 0.02
    seconds: float = 0.0
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, _rss_tree())

    def __enter__(self) -> Stage:
        self.peak_rss = _rss_tree()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._watch, name=f"rss-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.seconds = time.perf_counter() - self._start
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, _rss_tree())
