"""The dashboard's users: names and argon2 password hashes in a JSON file only its owner can read.

``$XDG_CONFIG_HOME/spotgym/users.json`` (an absolute ``XDG_CONFIG_HOME`` only), else ``~/.config/spotgym/users.json``,
unless ``--users FILE``. The file is written atomically with mode 0600 (its folder 0700) and refused when group or
others may read it. No password is ever written anywhere: only ``argon2id`` hashes (argon2-cffi's defaults).
"""

from __future__ import annotations

import json
import re
import stat
import threading
import time
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from spotgym.core.private import config_path, write_private_json

__all__ = ["MIN_PASSWORD", "UserError", "UserStore", "default_users_path"]

MIN_PASSWORD = 8
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_FORMAT = "spotgym-dashboard-users"


class UserError(ValueError):
    """A bad user name or password, or a users file that cannot be used (one line saying why)."""


def default_users_path() -> Path:
    """``$XDG_CONFIG_HOME/spotgym/users.json``, else ``~/.config/spotgym/users.json``."""
    return config_path("users.json")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"user name {name!r}: 1-64 characters, letters, digits and _ . @ - (starting with a letter "
                        "or digit)")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if password != password.strip():
        raise UserError("the password must not start or end with white space")
    return password


class UserStore:
    """``UserStore(path)``: read, add and check users. Re-reads the file when it changed on disk, so a user added with
    ``spotgym dashboard add-user`` can log in to a running dashboard."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path else default_users_path()
        self._hasher = PasswordHasher()
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int] | None, dict[str, dict[str, Any]]] = (None, {})
        self._dummy: str | None = None

    # ------------------------------------------------------------------ reading
    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def users(self) -> dict[str, dict[str, Any]]:
        """name -> {"hash", "created"}; {} when the file does not exist."""
        with self._lock:
            stamp = self._stamp()
            if stamp is not None and stamp == self._cache[0]:
                return self._cache[1]
            users = self._read() if stamp is not None else {}
            self._cache = (stamp, users)
            return users

    def _read(self) -> dict[str, dict[str, Any]]:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise UserError(f"users file {self.path} may be read by other users (mode {mode:03o}): "
                            f"run `chmod 600 {self.path}`")
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"users file {self.path} cannot be read: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("users"), dict):
            raise UserError(f"users file {self.path} is not a spotgym dashboard users file")
        users = {}
        for name, entry in doc["users"].items():
            if not isinstance(entry, dict) or not str(entry.get("hash", "")).startswith("$argon2"):
                raise UserError(f"users file {self.path}: user {name!r} has no argon2 hash")
            users[name] = entry
        return users

    def names(self) -> list[str]:
        return sorted(self.users())

    def __len__(self) -> int:
        return len(self.users())

    # ------------------------------------------------------------------ writing
    def add(self, name: str, password: str) -> bool:
        """Add ``name`` (or set its password when it exists: returns False then)."""
        check_name(name)
        check_password(password)
        users = dict(self.users())
        new = name not in users
        users[name] = {"hash": self._hasher.hash(password),
                       "created": users.get(name, {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime())}
        self._write(users)
        return new

    def remove(self, name: str) -> None:
        users = dict(self.users())
        if name not in users:
            raise UserError(f"no user {name!r} in {self.path}")
        del users[name]
        self._write(users)

    def _write(self, users: dict[str, dict[str, Any]]) -> None:
        write_private_json(self.path, {"format": _FORMAT, "version": 1, "users": users}, indent=2, sort_keys=True)
        with self._lock:
            self._cache = (None, {})

    # ------------------------------------------------------------------ checking
    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s. An unknown name costs one hash check too (no timing hint)."""
        entry = self.users().get(name) if isinstance(name, str) else None
        if entry is None:
            if self._dummy is None:
                self._dummy = self._hasher.hash("spotgym-dashboard-no-such-user")
            target = self._dummy
        else:
            target = entry["hash"]
        try:
            ok = self._hasher.verify(target, password or "")
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and entry is not None
