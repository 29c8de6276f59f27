"""The ``spotgym dashboard`` command line::

    spotgym dashboard [--runs DIR ...] [--journal URL ...] [--study URL ...] [--host 127.0.0.1] [--port 8050]
                      [--users FILE]
    spotgym dashboard add-user NAME [--password-stdin] [--users FILE]
    spotgym dashboard remove-user NAME [--users FILE]

``add_dashboard_commands(subparsers)`` adds them to the top-level ``spotgym`` parser; each ``func(args)`` returns the
exit status and raises ``ValueError`` (printed as one ``error:`` line by ``spotgym``) on bad input.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from spotgym.dashboard.users import UserError, UserStore, default_users_path

__all__ = ["DashboardError", "add_dashboard_commands"]


class DashboardError(ValueError):
    """The dashboard must not start (one line saying why)."""


def _users_path(args: argparse.Namespace) -> str | None:
    return getattr(args, "users_file", None) or getattr(args, "users", None)


def _serve(args: argparse.Namespace) -> int:
    from spotgym.dashboard.app import is_loopback

    store = UserStore(_users_path(args))
    try:
        n_users = len(store)
    except UserError as exc:
        raise DashboardError(str(exc)) from None
    loopback = is_loopback(args.host)
    if not loopback and n_users == 0:
        raise DashboardError(f"refusing to listen on {args.host} (not a loopback address) with no user in "
                             f"{store.path}: create one first with `spotgym dashboard add-user NAME`")
    from spotgym.dashboard.app import create_app, serve

    runs = args.runs or ["runs"]
    app = create_app(runs=runs, journals=args.journal or [], studies=args.study or [], users=store)
    print(f"dashboard: runs {', '.join(runs)}; {n_users} user(s) in {store.path}", flush=True)
    if n_users == 0:
        print("dashboard: no user yet: create one with `spotgym dashboard add-user NAME` (in another terminal) to "
              "sign in", flush=True)
    if not loopback:
        print(f"dashboard: warning: {args.host} is reachable from other machines and this server speaks plain HTTP; "
              "put it behind a TLS reverse proxy (passwords and session cookies travel in clear otherwise)",
              flush=True)
    try:
        serve(app, args.host, args.port)
    except OSError as exc:
        raise DashboardError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        pass
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise DashboardError("--password-stdin: nothing on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise DashboardError("no terminal to prompt for the password: pipe it with --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise DashboardError("the two passwords differ")
    return first


def _add_user(args: argparse.Namespace) -> int:
    store = UserStore(_users_path(args))
    try:
        password = _read_password(args)
        new = store.add(args.name, password)
    except UserError as exc:
        raise DashboardError(str(exc)) from None
    print(f"{'added user' if new else 'changed the password of'} {args.name} in {store.path} (argon2 hash, mode 0600)")
    return 0


def _remove_user(args: argparse.Namespace) -> int:
    store = UserStore(_users_path(args))
    try:
        store.remove(args.name)
    except UserError as exc:
        raise DashboardError(str(exc)) from None
    print(f"removed user {args.name} from {store.path} (a running dashboard keeps its open sessions until restarted)")
    return 0


def add_dashboard_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dashboard`` (and its ``add-user`` / ``remove-user``) to ``spotgym``'s top-level subparsers."""
    users_help = f"users file (default {default_users_path()}; $XDG_CONFIG_HOME/spotgym/users.json when set)"
    dash = subparsers.add_parser(
        "dashboard", help="web dashboard: runs, backtests, studies and live sessions (login required)",
        description="Serve the dashboard: every run under --runs (default ./runs) with its backtests, the Optuna "
                    "studies found there, and the live sessions of their journals and of --journal. Listens on "
                    "127.0.0.1:8050 by default; another address is refused until a user exists "
                    "(`spotgym dashboard add-user NAME`). API keys are never handled here (see `spotgym keys`).")
    dash.add_argument("--runs", nargs="+", action="extend", metavar="DIR", help="folders holding run directories "
                      "(repeatable; default ./runs)")
    dash.add_argument("--journal", nargs="+", action="extend", metavar="URL",
                      help="live journals: SQLite paths or SQLAlchemy URLs (repeatable; those under the runs are found "
                           "on their own)")
    dash.add_argument("--study", nargs="+", action="extend", metavar="URL",
                      help="Optuna storage URLs (repeatable; the study.db files under the runs are found on their own)")
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dash.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    dash.add_argument("--users", default=None, metavar="FILE", help=users_help)
    dash.set_defaults(func=_serve)
    sub = dash.add_subparsers(dest="dashboard_command", required=False, metavar="{add-user,remove-user}")

    add = sub.add_parser("add-user", help="add a user (or set its password)",
                         description="Add a dashboard user, or set the password of an existing one. The password is "
                                     "prompted for twice (nothing echoed), or read from the first line of standard "
                                     "input with --password-stdin; only its argon2 hash is stored, in a mode-0600 "
                                     "file.")
    add.add_argument("name", help="user name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--users", dest="users_file", default=None, metavar="FILE", help=users_help)
    add.set_defaults(func=_add_user)

    rm = sub.add_parser("remove-user", help="remove a user")
    rm.add_argument("name", help="user name")
    rm.add_argument("--users", dest="users_file", default=None, metavar="FILE", help=users_help)
    rm.set_defaults(func=_remove_user)
    return dash
