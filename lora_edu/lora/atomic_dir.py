"""Writing a directory of files so that a crash at any moment leaves the old or the new one, complete.

The files are written into a hidden sibling, fsynced (each file, then the directory), and swapped
with the target in one atomic step (``renameat2(RENAME_EXCHANGE)`` on Linux, ``renamex_np(RENAME_SWAP)``
on macOS; elsewhere two renames, undone on an exception).  The parent directory is fsynced after the
swap, so the new name survives a power cut.  Leftovers of a save killed outright (hidden siblings
that hold only adapter files) are removed by the next save to the same path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

__all__ = ["check_replaceable", "replace_directory"]

TAG = ".lora_edu-"


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (directories cannot be opened on Windows: skipped there)."""
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def libc_swap() -> Callable[[Path, Path], int] | None:
    """The platform's atomic exchange of two paths, or None."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        return lambda a, b: libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        return lambda a, b: libc.renamex_np(os.fsencode(a), os.fsencode(b), 2)  # RENAME_SWAP
    return None


def exchange(a: Path, b: Path) -> None:
    """Swap two existing directories atomically (or by two renames where the OS cannot)."""
    swap = libc_swap()
    if swap is not None:
        if swap(a, b) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(b))
    aside = Path(tempfile.mkdtemp(prefix=f".{b.name}{TAG}old-", dir=b.parent))
    try:
        os.replace(b, aside / "x")
        os.replace(a, b)
    finally:  # the old version goes back to b if the new one is not there, else to a
        if (aside / "x").exists():
            os.replace(aside / "x", a if b.exists() else b)
        aside.rmdir()


def check_replaceable(target: Path, ours: Collection[str], kept: Collection[str], is_ours: Callable[[Path], bool]) -> None:
    """Raise ``ValueError`` unless ``target`` is absent, an empty directory, or one of ours.

    A directory is ours when ``is_ours(target)`` and every entry is a file named in ``ours`` or ``kept``.
    """
    if target == Path.cwd() or target in Path.cwd().parents or target.parent == target:
        raise ValueError(
            f"Cannot save into {str(target)!r}: it is the current directory or one of its parents. Pass a new subdirectory, "
            "e.g. 'adapters/my-task'."
        )
    blocker = next((p for p in target.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ValueError(f"{str(blocker)!r} is a file, so {str(target)!r} cannot be a directory inside it; choose another path.")
    if target.is_symlink():
        raise ValueError(f"{str(target)!r} is a symbolic link; pass the directory itself or a new path.")
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(
            f"{str(target)!r} is a file, not an adapter directory; it was left untouched. An adapter is a directory: "
            f"choose a new path, e.g. {str(target.with_suffix('')) + '-adapter'!r}."
        )
    entries = sorted(os.listdir(target))
    if not entries:
        return
    foreign = [e for e in entries if e not in ours and e not in kept or not (target / e).is_file()]
    if foreign or not is_ours(target):
        what = f"it holds {', '.join(map(repr, foreign[:3]))}" if foreign else "its adapter_config.json is not a LoRA adapter's"
        raise ValueError(
            f"{str(target)!r} is a folder that is not an adapter directory ({what}); nothing was written and nothing deleted. "
            "Choose a new or empty folder."
        )


def sweep_leftovers(target: Path, ours: Collection[str], kept: Collection[str]) -> None:
    """Remove hidden siblings ``.<name>.lora_edu-*`` that an earlier, killed save left (only if they hold only our files)."""
    for p in target.parent.glob(f".{glob.escape(target.name)}{TAG}*"):
        if p.is_dir() and not p.is_symlink() and all(e in ours or e in kept for e in os.listdir(p)):
            shutil.rmtree(p, ignore_errors=True)


def replace_directory(
    target: Path, write: Callable[[Path], None], ours: Collection[str], kept: Collection[str], is_ours: Callable[[Path], bool]
) -> None:
    """Make ``target`` a directory holding what ``write(tmp)`` writes, atomically; files named in ``kept`` carry over."""
    check_replaceable(target, ours, kept, is_ours)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(target, ours, kept)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TAG}new-", dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary directory
        write(tmp)
        for name in kept:
            if (target / name).is_file():
                shutil.copy2(target / name, tmp / name)
        for p in tmp.iterdir():
            fsync_path(p)
        fsync_path(tmp)
        if target.exists():
            exchange(tmp, target)  # tmp now holds the previous version
        else:
            os.rename(tmp, target)
        fsync_path(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        fsync_path(target.parent)
