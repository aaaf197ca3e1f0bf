"""Files and directories Berth keeps on disk: private to the user that runs it.

Data directories are 0700 and files 0600 whatever the umask, and ones left by
an older version with looser modes are tightened when they are opened again.
Files that are replaced are written atomically (temporary file, fsync,
rename), so a crash leaves either the old content or the new, never half.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) and make it 0700; an existing one is tightened."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing directory.
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def tighten(path: Path, mode: int = PRIVATE_FILE_MODE) -> None:
    """Make an existing file `mode` (no-op when it does not exist)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, mode)


def write_private(path: Path, data: bytes | str) -> None:
    """Replace `path` atomically with `data`, mode 0600."""
    content = data.encode() if isinstance(data, str) else data
    # mkstemp creates the file 0600 regardless of the umask, in the same
    # directory so the rename cannot cross file systems.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def open_private_append(path: Path) -> BinaryIO:
    """Open `path` for appending, creating it 0600; an existing one is tightened."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")
