"""Atomic file writes and hashing for checkpoints, logs and reports.

Data goes to a temporary file in the target's folder and is renamed over the target, so an interrupted
run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(temporary_path)`, then rename the temporary file to `path`; remove it if anything fails.

    The file gets the mode open() would give a new file there: 0o666 without the bits of the umask. That
    applies even when `write` replaces the file, as safetensors' save_file does with a file of mode 0o600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _create_temporary(path)
    try:
        mode = os.stat(temporary).st_mode & 0o777
        write(temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> str:
    """Create an empty file beside `path` under a new random name and return its path.

    tempfile.mkstemp would create it with mode 0o600 whatever the umask, so the file is created here with
    O_EXCL and mode 0o666, which the kernel reduces by the umask.
    """
    while True:
        temporary = path.parent / f".tmp-{path.name}.{secrets.token_hex(4)}"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(descriptor)
        return str(temporary)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_atomically(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
