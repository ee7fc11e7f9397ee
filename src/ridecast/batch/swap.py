"""Put a staged folder in place of another in one step, so whoever looks sees the old folder
whole or the new folder whole, never some files of each.

A rename replaces a file atomically, but not a non-empty folder. Linux's ``renameat2`` with
``RENAME_EXCHANGE`` swaps two folders atomically (ext4, xfs, btrfs, tmpfs, overlayfs…); the old
one then sits where the staged one was and is deleted. Where that call is missing (another OS,
a file system without it), the old folder is renamed aside and the new one renamed in: for that
moment the run's folder is absent, which a reader sees as "not scored yet", never as a mix, and
a crash in between leaves the month for the next run to score.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically; False if this system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(staged: Path, final: Path) -> None:
    """Move the folder ``staged`` to ``final``, replacing what was there; ``staged`` is gone
    afterwards (the old contents with it)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, final)  # nothing there yet (or an empty folder): one rename
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if _exchange(staged, final):
        shutil.rmtree(staged)  # holds the old folder now
        return
    aside = staged.with_name(f"{staged.name}.replaced")
    os.rename(final, aside)
    os.rename(staged, final)
    shutil.rmtree(aside)
