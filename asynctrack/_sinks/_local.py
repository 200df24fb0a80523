"""The embedded default destination: a local directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .._errors import PermanentSinkError
from ._base import Batch

__all__ = ["LocalSink"]


class LocalSink:
    """Writes batch files under a directory, each whole or not at all.

    A file is written to a temporary name in its final directory, fsync'd, renamed
    over its final name, and the directory is fsync'd, so that after ``flush()``
    returns the file survives a crash or power loss, and a reader never sees half
    a file. Writes run on the worker thread (blocking): they release the GIL, and
    using no executor keeps them working during interpreter shutdown, when
    ``concurrent.futures`` refuses new work.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).expanduser().absolute()

    @property
    def destination(self) -> str:
        return str(self._root)

    @property
    def root(self) -> Path:
        """The directory files are written under."""
        return self._root

    async def start(self) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentSinkError(str(self._root), f"cannot create directory: {exc}") from exc
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise PermanentSinkError(str(self._root), "directory is not writable")

    async def write_batch(self, batch: Batch) -> None:
        self._write(batch.key, batch.data)

    async def write_document(self, key: str, data: bytes) -> None:
        self._write(key, data)

    async def aclose(self) -> None:
        return None

    def _write(self, key: str, data: bytes) -> None:
        path = self._root / key
        directory = path.parent
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
