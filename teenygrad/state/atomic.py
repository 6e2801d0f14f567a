"""Atomic file replacement: what the user saved before is never lost to a crash or an exception mid-save."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
  """Yield a binary file; on success it replaces `path` in one step, on any exception `path` is untouched.

  The data goes to a temporary file in the same directory (a rename across file systems is not atomic), which is
  flushed and fsynced before `os.replace`, and the directory is fsynced after it so the rename itself is durable.
  """
  path = Path(path)
  directory = path.parent if str(path.parent) else Path(".")
  if not directory.is_dir(): raise FileNotFoundError(f"directory {str(directory)!r} does not exist (saving {str(path)!r})")
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError): os.unlink(tmp)
    raise
  _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
  try: fd = os.open(directory, os.O_RDONLY)
  except OSError: return   # some platforms can't open a directory; the rename is still atomic there
  try: os.fsync(fd)
  except OSError: pass
  finally: os.close(fd)
