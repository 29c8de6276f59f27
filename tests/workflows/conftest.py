"""Fixtures for the agent tests: a throw-away PostgreSQL server on loopback for the distributed tuning test.

``bash scripts/test-services.sh`` makes sure the server binaries exist (and, as root, an OS user to run
them: postgres refuses to run as root). The fixture initialises a cluster in a fresh temporary
directory, starts it on a free 127.0.0.1 port with trust authentication, creates a database, and stops
and removes everything at the end of the session.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_DB_USER = "spotgym"


def _pg_bindir() -> Path | None:
    candidates = [os.environ.get("SPOTGYM_PG_BIN", "")]
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                         reverse=True)
    which = shutil.which("pg_ctl")
    candidates.append(str(Path(which).resolve().parent) if which else "")
    for c in candidates:
        if c and all((Path(c) / name).is_file() for name in ("pg_ctl", "initdb", "postgres")):
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    if user is None:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *cmd]
    return ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--init-groups", *cmd]


@pytest.fixture(scope="session")
def postgres_url():
    """``postgresql+psycopg2://spotgym@127.0.0.1:<port>/optuna`` of a server that lives for the session."""
    import psycopg2  # a dev dependency: pip install -e '.[dev]'

    bindir = _pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries not found: run `bash scripts/test-services.sh` first")
    user = None
    root = Path(tempfile.mkdtemp(prefix="spotgym-pg-"))
    if os.geteuid() == 0:
        user = os.environ.get("SPOTGYM_PG_OS_USER", "postgres")
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            pytest.fail(f"OS user {user!r} missing (postgres refuses to run as root): run `bash scripts/test-services.sh`")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data, logfile = root / "data", root / "server.log"

    def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(_as_user(cmd, user), cwd=root, capture_output=True, text=True, timeout=120, **kwargs)

    started = False
    try:
        init = run([str(bindir / "initdb"), "-D", str(data), "-U", PG_DB_USER, "--auth=trust", "-E", "UTF8",
                    "--no-locale", "--no-sync"])
        if init.returncode:
            pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        for _attempt in range(3):  # the port may be taken between probing and binding
            port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=60 -c shared_buffers=32MB")
            start = run([str(bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(logfile),
                         "-o", options])
            if start.returncode == 0:
                started = True
                break
        if not started:
            log = logfile.read_text() if logfile.exists() else ""
            pytest.fail(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{log}")
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user=PG_DB_USER, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE optuna")
        conn.close()
        yield f"postgresql+psycopg2://{PG_DB_USER}@127.0.0.1:{port}/optuna"
    finally:
        if started:
            run([str(bindir / "pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(data)])
        shutil.rmtree(root, ignore_errors=True)
