"""Files the toolkit writes: atomic writes with normal permissions, stale temporary files cleaned, output folders
checked before any work, outputs that never replace an input, and output folders locked by the job writing them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from clipkit.guidance.errors import ImageError, ParameterError

TEMP_SUFFIX = ".clipkit-tmp"
STALE_TEMP_S = 3600.0  # a temporary file of ours this old belongs to a write that was killed
# temporary names this module writes, and the ones earlier versions wrote (mkstemp: 8 random characters)
_OURS = re.compile(r"^\..+(\.clipkit-tmp|\.[A-Za-z0-9_]{8}\.tmp|\.safetensors\.tmp)$")
_CLEANED: dict[str, float] = {}
_CLEAN_LOCK = threading.Lock()
_MODE: int | None = None


def file_mode() -> int:
    """0o666 less the process umask: the mode ``open()`` gives a new file (``mkstemp`` gives 0o600)."""
    global _MODE
    if _MODE is None:
        umask = None
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
        if umask is None:  # not Linux: read it the only portable way (set and restore)
            umask = os.umask(0o022)
            os.umask(umask)
        _MODE = 0o666 & ~umask
    return _MODE


def clean_stale_temps(folder: str | os.PathLike, older_than_s: float = STALE_TEMP_S, every_s: float = 60.0) -> int:
    """Delete this toolkit's temporary files in ``folder`` older than ``older_than_s`` (left by a killed write);
    looked at most once a minute per folder. Returns how many were removed."""
    folder = str(folder)
    now = time.time()
    with _CLEAN_LOCK:
        if now - _CLEANED.get(folder, 0.0) < every_s:
            return 0
        _CLEANED[folder] = now
    removed = 0
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if not _OURS.match(entry.name):
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > older_than_s:
                        os.unlink(entry.path)
                        removed += 1
    except OSError:
        pass
    return removed


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved over ``path`` on success (with the mode a plain
    ``open`` would give), removed on failure, so a crash never leaves half a file nor replaces a good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object],
                 protect: Iterable[str | os.PathLike] = (), overwrite: bool = True) -> Path:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file.

    ``protect`` lists input paths that must never be overwritten; ``overwrite=False`` refuses (FileExistsError)
    when ``path`` exists, atomically, even against another writer racing for the same name."""
    path = Path(path)
    check_not_protected([path], protect)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(name, file_mode())
        if overwrite:
            os.replace(name, path)
        else:
            os.link(name, path)  # fails with FileExistsError if another writer got there first
            os.unlink(name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return path


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """(resolved path, (device, inode) when it exists): hard links and symlinks of one file compare equal."""
    try:
        st = path.stat()
        inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except OSError:
        inode = None
    return str(path.resolve()), inode


def check_not_protected(outputs: Iterable[str | os.PathLike], protect: Iterable[str | os.PathLike],
                        what: str = "an input") -> None:
    """Refuse outputs that are (or resolve to, or are hard links of) a protected file: an input image, a mask, a
    preset, the PNG whose settings a run reproduces. Checked before any work and again at each write; linear in
    the number of files (a batch of thousands checks quickly)."""
    names: dict[str, Path] = {}
    inodes: dict[tuple[int, int], Path] = {}
    for p in protect:
        if p is None:
            continue
        resolved, inode = _identity(Path(p))
        names[resolved] = Path(p)
        if inode is not None:
            inodes[inode] = Path(p)
    if not names:
        return
    for out in map(Path, outputs):
        resolved, inode = _identity(out)
        hit = names.get(resolved) or (inodes.get(inode) if inode is not None else None)
        if hit is not None:
            raise ImageError(f"refusing to write {out}: it is {what} ({hit}); choose another output name")


def check_output_dir(folder: str | os.PathLike, create: bool = True) -> Path:
    """Refuse, before any work, an output folder that cannot be created or written (a clear message, never a raw
    PermissionError later). Without ``create`` nothing is made: the nearest existing parent must be writable."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"output {folder} is a file, not a folder; choose a folder")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ParameterError(f"cannot create the output folder {folder}: {e.strerror or e}") from e
        probe = folder
    else:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise ParameterError(f"cannot create the output folder {folder}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ParameterError(f"cannot write into the output folder {probe} (permission denied)")
    if create:  # os.access trusts mode bits; a read-only mount or an ACL says otherwise only when tried
        try:
            fd, name = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=TEMP_SUFFIX)
            os.close(fd)
            os.unlink(name)
        except OSError as e:
            raise ParameterError(f"cannot write into the output folder {folder}: {e.strerror or e}") from e
    return folder


LOCK_NAME = ".clipkit.lock"


class FolderLockedError(ParameterError):
    """Another job is writing into this output folder."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """The lock of an output folder, held by the job writing into it: ``OUTPUT/.clipkit.lock`` created atomically
    (O_EXCL) holding the job's pid and host. A second job on the folder is refused while the holder lives; the lock
    of a process that died (same host, pid gone) is taken over. Use as a context manager."""

    def __init__(self, folder: str | os.PathLike, what: str = "job") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._held = False

    def _describe(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return f"{os.getpid()} {socket.gethostname()} {since} {self.what}\n"

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self._describe())
        return True

    def _holder(self, path: Path | None = None) -> tuple[int, str, str] | None:
        try:
            text = (path or self.path).read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return (-1, "", "")
        parts = text.split()
        try:
            return int(parts[0]), parts[1] if len(parts) > 1 else "", " ".join(parts[2:])
        except (ValueError, IndexError):
            return (-1, "", "")  # empty or torn: its writer died between create and write

    def acquire(self) -> OutputLock:
        for _ in range(20):
            if self._create():
                self._held = True
                return self
            holder = self._holder()
            if holder is None:
                continue  # released between our attempt and the read: try again
            pid, host, rest = holder
            here = host in ("", socket.gethostname())
            if pid < 0:  # empty or torn: being written right now, or its writer died between create and write
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age > 10 and self._take_over(holder):
                    continue
                time.sleep(0.05)
                continue
            if here and not _pid_alive(pid):
                self._take_over(holder)  # the job that held it is gone
                continue
            since = rest.split()[0] if rest else "?"
            raise FolderLockedError(
                f"the output folder {self.folder} is in use by another {self.what} (pid {pid}"
                + ("" if here else f" on {host}") + f", since {since}); wait for it to finish or choose another "
                f"output folder (if no such job runs any more, delete {self.path})")
        raise FolderLockedError(f"could not lock the output folder {self.folder} (another job keeps taking it); "
                                f"try again, or delete {self.path} if no job runs")

    def _take_over(self, seen: tuple[int, str, str]) -> bool:
        """Move a dead job's lock aside, checking it is still the one we saw (not a new job's lock)."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}.{threading.get_ident()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else moved it: try to create ours
        if self._holder(aside) != seen:  # a live job's lock: put it back if its place is still free
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        with contextlib.suppress(OSError):
            aside.unlink()
        return True

    def release(self) -> None:
        if self._held:
            self._held = False
            holder = self._holder()
            if holder is not None and holder[0] == os.getpid():
                with contextlib.suppress(OSError):
                    self.path.unlink()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()



def file_sha256(path: str | os.PathLike) -> str:
    """Hex digest of a file's bytes, read in 1 MB blocks: records exactly which weights produced a result."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
