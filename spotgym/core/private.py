"""Private files in the user's config directory (the keystore, the dashboard's users): where they live, and an
atomic write that never leaves them readable by others."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["config_path", "write_private_json"]


def config_path(name: str) -> Path:
    """``$XDG_CONFIG_HOME/spotgym/<name>`` (an absolute ``XDG_CONFIG_HOME`` only, as the XDG spec says), else
    ``~/.config/spotgym/<name>``."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "spotgym" / name


def write_private_json(path: Path, doc: Any, **dump: Any) -> None:
    """Write ``doc`` as JSON to ``path``, mode 0600, atomically (a temporary file, fsync, ``os.replace``, the folder
    fsynced). Folders it creates are mode 0700; existing ones are left as they are. Raises ``OSError``."""
    folder = path.parent
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(doc, fh, **dump)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.chmod(path, 0o600)
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
