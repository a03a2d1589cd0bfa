"""Progress reporting and cooperative cancellation for long jobs (sampling, rendering, training).

A job receives an optional ``progress(fraction, message)`` callback and an optional ``cancel()``
callable returning True when the user asked to stop. It calls :meth:`ProgressReporter.update` at
safe points; ``update`` checks ``cancel`` and raises :class:`Cancelled`, so the job unwinds through
its normal exception path (files written atomically stay consistent).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .. import NearError


class Cancelled(NearError):
    """The user cancelled a long job; nothing is wrong, the partial result is discarded."""


class Progress(Protocol):
    """``callback(fraction in [0, 1], message)``; must return quickly (it runs on the job's thread)."""

    def __call__(self, fraction: float, message: str) -> None: ...


CancelCheck = Callable[[], bool]


class ProgressReporter:
    """Forward progress to an optional callback and poll an optional cancel flag.

    ``span=(start, end)`` maps this job's [0, 1] onto a sub-range of a parent job's bar, so nested
    jobs (stage-1 sampling inside an import) report one monotone fraction.
    """

    def __init__(
        self,
        callback: Progress | None = None,
        cancel: CancelCheck | None = None,
        span: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.callback = callback
        self.cancel = cancel
        self.span = span

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` if the cancel callable says so."""
        if self.cancel is not None and self.cancel():
            raise Cancelled("Cancelled by the user.")

    def update(self, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (clamped to [0, 1]) of this job done, then check for cancellation."""
        self.check_cancel()
        if self.callback is not None:
            f = min(max(float(fraction), 0.0), 1.0)
            a, b = self.span
            self.callback(a + (b - a) * f, message)

    def sub(self, start: float, end: float) -> ProgressReporter:
        """A reporter for a sub-job covering [start, end] of this job's range."""
        a, b = self.span
        return ProgressReporter(self.callback, self.cancel, (a + (b - a) * start, a + (b - a) * end))


def as_reporter(
    progress: Progress | ProgressReporter | None, cancel: CancelCheck | None = None
) -> ProgressReporter:
    """Wrap a bare callback (or None) into a :class:`ProgressReporter`."""
    if isinstance(progress, ProgressReporter):
        if cancel is not None and progress.cancel is None:
            return ProgressReporter(progress.callback, cancel, progress.span)
        return progress
    return ProgressReporter(progress, cancel)


@contextlib.contextmanager
def percent_bar(desc: str, disable: bool = False, **tqdm_args: Any) -> Iterator[Progress]:
    """A tqdm bar in percent for the CLI, as a ``progress(fraction, message)`` callback: the bar
    shows the fraction done and the job's latest message."""
    from tqdm import tqdm

    with tqdm(total=100, desc=desc, unit="%", disable=disable, **tqdm_args) as bar:

        def progress(fraction: float, message: str) -> None:
            bar.update(int(100 * fraction) - bar.n)
            bar.set_postfix_str(message)

        yield progress
