"""Files that are never left half-written, and directories one run at a time.

- :func:`replacing` / :func:`atomic_write`: write to a temporary file beside
  the target, flush it to disk, then rename it over the target in one step
  (``os.replace``).  A reader sees the old file or the new one, never a torn
  mix; a writer killed mid-way leaves the old file as it was (and a
  ``.<name>.<pid>.<random>.tmp`` file that the next write of the same name
  removes).  The new file gets the mode a plain ``open()`` would give it.
- :func:`directory_lock`: an exclusive lock on an output directory, so two
  runs cannot write into it at once.

Checkpoints (:mod:`jaxflows.checkpoint`) and every file the CLI writes go
through these.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from typing import BinaryIO, Iterator

__all__ = ["replacing", "atomic_write", "directory_lock", "DirectoryLocked", "LOCK_FILE"]

# A temporary file is named ".<name>.<pid>.<random>.tmp"; one left behind by a
# killed writer is removed by the next save of the same file.
_STALE_SECONDS = 24 * 3600


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's process), or cannot tell: keep its file
    return True


def _remove_stale_temps(directory: str, name: str) -> None:
    """Delete ``.<name>.*.tmp`` files that no living writer owns: their pid is
    gone (killed mid-save), or they are older than a day."""
    prefix = "." + name + "."
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        full = os.path.join(directory, entry)
        middle = entry[len(prefix):-len(".tmp")].split(".")
        try:
            pid = int(middle[0])
        except ValueError:
            pid = None
        try:
            old = now - os.stat(full).st_mtime > _STALE_SECONDS
            if old or (pid is not None and pid != os.getpid() and not _pid_alive(pid)):
                os.remove(full)
        except OSError:
            pass


def _fsync_directory(directory: str) -> None:
    """Make a rename inside ``directory`` durable (best effort; not on every OS)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


@contextlib.contextmanager
def replacing(path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; when the block
    succeeds it is flushed to disk and replaces ``path`` atomically, when it
    raises the temporary file is removed and ``path`` is untouched.

    Parent directories are created.  The exact name given is written (unlike
    ``numpy.save``, which appends ``.npy`` to a name such as ``S.NPY``).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    _remove_stale_temps(directory, os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp",
                               dir=directory)
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def atomic_write(path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` through :func:`replacing`: all of it or nothing."""
    with replacing(path) as f:
        f.write(blob)


LOCK_FILE = ".jaxflows.lock"


class DirectoryLocked(OSError):
    """Another process holds the lock of an output directory (see :func:`directory_lock`)."""


@contextlib.contextmanager
def directory_lock(directory, what: str = "a jaxflows fit") -> Iterator[str]:
    """Hold an exclusive lock on ``directory`` (created) for a block of work.

    Two fits writing into one directory would overwrite each other's files; the
    second one to start raises :class:`DirectoryLocked` naming the directory
    and the holder's process id instead. The lock is an OS file lock
    (``flock``) on ``directory/.jaxflows.lock``: the kernel drops it when its
    holder exits, even when killed, so a stale lock never blocks a later run.
    On systems without ``fcntl`` (Windows) no lock is taken.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield directory
        return
    lock_path = os.path.join(directory, LOCK_FILE)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise DirectoryLocked(
                f"'{directory}' is in use by {what} (process {holder}); wait for it to finish "
                "or choose another output directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield directory
    finally:
        os.close(fd)  # releases the lock


