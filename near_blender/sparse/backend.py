"""Backend choice of a kernel family (sparse conv, attention): a process-wide default (from an
environment variable), a per-thread override (context manager), and a check of the name."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from .. import NearError


class BackendChoice:
    """The requested backend of one kernel family; ``what`` names it in errors."""

    def __init__(self, what: str, names: tuple[str, ...], env_var: str, default: str = "auto") -> None:
        self.what, self.names = what, names
        self.default = os.environ.get(env_var, default)
        self._state = threading.local()

    def check(self, name: str) -> str:
        if name not in self.names:
            raise NearError(f"Unknown {self.what} {name!r}; choose one of {self.names}.")
        return name

    def set(self, name: str) -> None:
        """Set the process-wide default."""
        self.default = self.check(name)

    def get(self) -> str:
        """The backend requested for this thread (context manager first, then the default)."""
        return getattr(self._state, "backend", None) or self.default

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[None]:
        """Use backend ``name`` inside the ``with`` block (this thread only)."""
        prev = getattr(self._state, "backend", None)
        self._state.backend = self.check(name)
        try:
            yield
        finally:
            self._state.backend = prev
