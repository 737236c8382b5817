"""Progress lines that a saved notebook keeps in their final state.

In a notebook, ``Progress`` shows one line of text and updates it in place (a display with an id), so the
notebook saved after the run shows the finished line ("200/200 steps, 5.1 s, ..."), not a bar frozen at
0% as a widget's saved text would. In a terminal it falls back to ``tqdm``.

    for job in progress(jobs, "fine-tunes"):
        ...
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["Progress", "in_notebook", "progress"]

T = TypeVar("T")
WIDTH = 24  # characters of the bar


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where output can be updated in place)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def duration(seconds: float) -> str:
    """3.2 s, 45 s, 2 min 05 s."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


class Progress:
    """A progress line for ``total`` steps: ``update(n, **info)`` at most every ``every`` seconds, ``close(**info)`` at the end."""

    def __init__(self, total: int, desc: str, disable: bool = False, every: float = 0.5) -> None:
        self.total, self.desc, self.disable, self.every = total, desc, disable, every
        self.start = self.last = time.perf_counter()
        self.n, self.info = 0, {}
        self.handle, self.bar = None, None
        if disable:
            return
        if in_notebook():
            from IPython.display import Pretty, display

            self.handle = display(Pretty(self.line()), display_id=True)
        else:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, mininterval=every)

    def line(self, done: bool = False) -> str:
        elapsed = time.perf_counter() - self.start
        filled = round(WIDTH * self.n / self.total) if self.total else WIDTH
        info = "".join(f", {k} {v}" for k, v in self.info.items())
        left = f", about {duration(elapsed / self.n * (self.total - self.n))} left" if 0 < self.n < self.total and not done else ""
        return f"{self.desc}: |{'█' * filled}{' ' * (WIDTH - filled)}| {self.n}/{self.total} [{duration(elapsed)}{left}{info}]" + (
            " done" if done else "")

    def update(self, n: int, **info: object) -> None:
        """Progress is now ``n`` of ``total``; ``info`` (e.g. loss=...) is shown after the time."""
        if self.disable:
            return
        self.info.update(info)
        if self.bar is not None:
            self.bar.update(n - self.n)
            if info:
                self.bar.set_postfix(info, refresh=False)
        self.n = n
        now = time.perf_counter()
        if self.handle is not None and (now - self.last >= self.every or n == self.total):
            from IPython.display import Pretty

            self.handle.update(Pretty(self.line()))
            self.last = now

    def close(self, **info: object) -> None:
        """The final line, kept by a saved notebook."""
        if self.disable:
            return
        self.info.update(info)
        if self.bar is not None:
            self.bar.close()
        if self.handle is not None:
            from IPython.display import Pretty

            self.handle.update(Pretty(self.line(done=True)))


def progress(items: Iterable[T], desc: str, disable: bool = False) -> Iterator[T]:
    """Iterate over ``items`` with a progress line (``len(items)`` must exist)."""
    items = list(items)
    bar = Progress(len(items), desc, disable)
    try:
        for i, item in enumerate(items):
            yield item
            bar.update(i + 1)
    finally:
        bar.close()
