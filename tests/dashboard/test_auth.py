"""The dashboard's access control and API over plain HTTP (a real uvicorn server on loopback, ``requests``): users
added from the CLI with ``--password-stdin`` land as argon2 hashes in a 0600 file; a session cookie is HttpOnly and
SameSite=Strict; pages redirect and the API answers 401 without one; failed logins are rate-limited; a
state-changing request needs the session's CSRF token; logout ends the session; a non-loopback address is refused
without a user; ``GET /api/runs`` lists runs with their test-split metrics. Synthetic run directories, no training."""

from __future__ import annotations

import argparse
import io
import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dash_synthetic import PASSWORD, USER, write_run

from spotgym.dashboard import app as dash_app
from spotgym.dashboard.app import create_app, is_loopback
from spotgym.dashboard.auth import LoginLimiter, session_cookie
from spotgym.dashboard.commands import add_dashboard_commands
from spotgym.dashboard.users import UserError, UserStore
from spotgym.live.journal import Journal
from spotgym.sim import serve_in_thread


# ---------------------------------------------------------------------------------------------------- helpers
def cli(argv: list[str], stdin: str | None = None, monkeypatch=None) -> int:
    """``spotgym ARGV`` through the real top-level parser (the dashboard commands added when spotgym.cli does not
    wire them yet), errors printed and mapped to 2 as ``spotgym.cli.main`` does."""
    from spotgym.cli import build_parser, user_errors

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "dashboard" not in sub.choices:
        add_dashboard_commands(sub)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class Client:
    """A ``requests`` session against a served dashboard; no redirect is followed unless asked."""

    def __init__(self, url: str) -> None:
        self.url, self.http = url, requests.Session()

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        return self.http.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        return self.http.post(self.url + path, timeout=30, **kw)

    def login(self, user: str = USER, password: str = PASSWORD, **data) -> requests.Response:
        return self.post("/login", data={"username": user, "password": password, **data})

    def csrf(self) -> str:
        page = self.get("/runs").text
        marker = '<meta name="csrf-token" content="'
        return page[page.index(marker) + len(marker):].split('"', 1)[0]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_runs")
    write_run(root / "alpha", seed=1)
    write_run(root / "sweep" / "beta", seed=2, experiment="sweep")
    write_run(root / "fresh", seed=3, backtest=False)
    write_run(root / "evil<img src=x onerror=alert(1)>", seed=4)
    j = Journal(root / "alpha" / "live" / "s1" / "journal.sqlite", "s1")
    j.open_session(mode="sim", symbol="ETH/USDT", run_dir=str(root / "alpha"))
    j.set_session(state="stopped")
    j.close()
    return root


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth_config") / "users.json"
    store = UserStore(path)
    store.add(USER, PASSWORD)
    store.add("bob", "another good password")
    return path


@pytest.fixture(scope="module")
def server(runs_root, users) -> Iterator[Any]:
    app = create_app(runs=[runs_root], users=users)
    with serve_in_thread(app) as url:
        app.state.url = url
        yield app
    app.state.live.close()


@pytest.fixture
def client(server) -> Client:
    return Client(server.state.url)


# ---------------------------------------------------------------------------------------------------- users
def test_add_user_reads_stdin_and_stores_only_an_argon2_hash_in_a_0600_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert cli(["dashboard", "add-user", USER, "--password-stdin"], PASSWORD + "\n", monkeypatch) == 0
    path = tmp_path / "cfg" / "spotgym" / "users.json"
    assert f"added user {USER} in {path}" in capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert PASSWORD not in text
    entry = json.loads(text)["users"][USER]
    assert set(entry) == {"hash", "created"} and entry["hash"].startswith("$argon2id$")
    store = UserStore(path)
    assert store.verify(USER, PASSWORD) and not store.verify(USER, PASSWORD + "x") and not store.verify("eve", PASSWORD)
    # the same name again sets its password; --users FILE puts users elsewhere
    assert cli(["dashboard", "add-user", USER, "--password-stdin"], "a brand new password\n", monkeypatch) == 0
    assert "changed the password" in capsys.readouterr().out
    assert UserStore(path).verify(USER, "a brand new password") and not UserStore(path).verify(USER, PASSWORD)
    other = tmp_path / "elsewhere" / "team.json"
    assert cli(["dashboard", "add-user", "bob", "--password-stdin", "--users", str(other)], "bob's password\n",
               monkeypatch) == 0
    assert UserStore(other).names() == ["bob"] and stat.S_IMODE(other.stat().st_mode) == 0o600
    assert UserStore(path).names() == [USER]


@pytest.mark.parametrize("argv, stdin, message", [
    (["add-user", "alice", "--password-stdin"], "short\n", "at least 8 characters"),
    (["add-user", "al ice", "--password-stdin"], PASSWORD + "\n", "user name 'al ice'"),
    (["add-user", "alice", "--password-stdin"], "", "nothing on standard input"),
    (["add-user", "alice"], "", "pipe it with --password-stdin"),
])
def test_add_user_refuses_bad_input(tmp_path, monkeypatch, capsys, argv, stdin, message):
    users = tmp_path / "users.json"
    assert cli(["dashboard", *argv, "--users", str(users)], stdin, monkeypatch) == 2
    assert message in capsys.readouterr().err
    assert not users.exists()


def test_a_users_file_others_may_read_is_refused(tmp_path, monkeypatch, capsys):
    users = tmp_path / "users.json"
    UserStore(users).add(USER, PASSWORD)
    users.chmod(0o644)
    with pytest.raises(UserError, match="chmod 600"):
        UserStore(users).users()
    monkeypatch.setattr(dash_app, "serve", lambda *a, **k: pytest.fail("served"))
    assert cli(["dashboard", "--users", str(users), "--runs", str(tmp_path)]) == 2
    assert "may be read by other users" in capsys.readouterr().err


def test_non_loopback_address_is_refused_until_a_user_exists(tmp_path, monkeypatch, capsys):
    served: list[tuple[Any, ...]] = []
    monkeypatch.setattr(dash_app, "serve", lambda app, host, port, **k: served.append((host, port)))
    users = tmp_path / "users.json"
    runs = ["--runs", str(tmp_path)]
    assert cli(["dashboard", "--host", "0.0.0.0", "--users", str(users), *runs]) == 2
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err and not served
    assert cli(["dashboard", "--users", str(users), *runs]) == 0  # loopback: allowed, says how to add a user
    assert "no user yet" in capsys.readouterr().out
    assert served == [("127.0.0.1", 8050)]
    UserStore(users).add(USER, PASSWORD)
    assert cli(["dashboard", "--host", "0.0.0.0", "--port", "8123", "--users", str(users), *runs]) == 0
    assert served[-1] == ("0.0.0.0", 8123) and "TLS" in capsys.readouterr().out
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("::")


# ---------------------------------------------------------------------------------------------------- sessions
PAGES = ["/", "/runs", "/run/abc", "/studies", "/study/abc?name=x", "/live", "/live/abc", "/compare?run=a",
         "/static/plotly.min.js", "/static/dashboard.js"]
APIS = ["/api/runs", "/api/live", "/api/live/abc"]


def test_without_a_session_pages_redirect_to_login_and_the_api_answers_401(client):
    for cookies in ({}, {"spotgym_session": "forged"}):
        for path in PAGES:
            reply = client.get(path, cookies=cookies)
            assert reply.status_code == 303, path
            assert reply.headers["location"].startswith("/login?next=%2F"), path
        for path in APIS:
            reply = client.get(path, cookies=cookies)
            assert reply.status_code == 401 and reply.json() == {"error": "login required"}, path
        assert client.post("/api/live/abc/command", json={"kind": "stop"}, cookies=cookies).status_code == 401
        assert client.post("/logout", cookies=cookies).status_code == 303
    assert client.get("/login").status_code == 200


def test_login_sets_an_httponly_samesite_strict_session_cookie(client):
    reply = client.login()
    assert reply.status_code == 303 and reply.headers["location"] == "/runs"
    cookie = reply.headers["set-cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    assert attrs[0].startswith("spotgym_session=") and len(attrs[0]) > 40
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attrs)
    assert "Secure" not in attrs  # plain http on loopback; over https it is set:
    assert "Secure" in session_cookie("t", secure=True).split("; ")
    assert client.get("/runs").status_code == 200
    assert client.get("/api/runs").status_code == 200
    # where the login goes next: a local path only
    other = Client(client.url)
    assert other.login(next="/compare?split=val").headers["location"] == "/compare?split=val"
    assert Client(client.url).login(next="//evil.example/x").headers["location"] == "/runs"
    assert Client(client.url).login(next="https://evil.example/").headers["location"] == "/runs"


def test_failed_logins_are_rate_limited_per_user_and_address(client, server, monkeypatch):
    now = [1_000.0]  # the limiter's clock, moved by hand past its 60 s window below
    monkeypatch.setattr(server.state.limiter, "clock", lambda: now[0])
    codes = [client.login(password="wrong password").status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    limited = client.login()  # the right password too: guessing stops
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "60"
    assert "Too many failed sign-ins" in limited.text
    assert Client(client.url).login("bob", "another good password").status_code == 303  # another user: unaffected
    now[0] += 59
    assert client.login().status_code == 429
    now[0] += 1  # a minute after the 5th failure
    assert client.login().status_code == 303


def test_login_limiter_window():
    now = [0.0]
    limiter = LoginLimiter(limit=5, window_s=60, per_address=8, clock=lambda: now[0])
    for _ in range(5):
        assert limiter.retry_after("a", "ip") == 0
        limiter.failed("A", "ip")
        now[0] += 1
    assert limiter.retry_after("a", "ip") == pytest.approx(55)
    assert limiter.retry_after("a", "other-ip") == 0
    for name in ("u1", "u2", "u3"):
        limiter.failed(name, "ip")
    assert limiter.retry_after("fresh-name", "ip") > 0  # 8 failures from one address, whatever the names
    now[0] += 60
    assert limiter.retry_after("a", "ip") == 0


def test_state_changing_requests_need_the_sessions_csrf_token(client, runs_root):
    assert client.login().status_code == 303
    token = client.csrf()
    assert len(token) > 30
    sid = next(s["id"] for s in client.get("/api/live").json() if s["session"] == "s1")
    url = f"/api/live/{sid}/command"
    assert client.post(url, json={"kind": "pause"}).status_code == 403
    assert client.post(url, json={"kind": "pause"}, headers={"X-CSRF-Token": token + "x"}).status_code == 403
    other = Client(client.url)
    other.login("bob", "another good password")
    assert client.post(url, json={"kind": "pause"}, headers={"X-CSRF-Token": other.csrf()}).status_code == 403
    assert client.post("/logout").status_code == 403
    assert client.post("/logout", data={"csrf_token": "nope"}).status_code == 403
    j = Journal(runs_root / "alpha" / "live" / "s1" / "journal.sqlite", "s1")
    assert "command" not in set(j.frame("events")["kind"])
    reply = client.post(url, json={"kind": "pause"}, headers={"X-CSRF-Token": token})
    assert reply.status_code == 200 and reply.json()["user"] == USER
    assert "stopped" in reply.json()["message"]  # the session's runner is not running: the page says so
    assert client.post(url, json={"kind": "withdraw"}, headers={"X-CSRF-Token": token}).status_code == 400
    commands = [e.payload for e in j.frame("events").itertuples() if e.kind == "command"]
    assert commands == [{"kind": "pause", "user": USER}]
    assert j.pending_commands() == ["pause"]
    j.close()


def test_logout_ends_the_session(client):
    client.login()
    token, cookie = client.csrf(), client.http.cookies.get("spotgym_session")
    reply = client.post("/logout", data={"csrf_token": token})
    assert reply.status_code == 303 and reply.headers["location"] == "/login"
    assert "Max-Age=0" in reply.headers["set-cookie"]
    replay = requests.get(client.url + "/api/runs", cookies={"spotgym_session": cookie}, timeout=10)
    assert replay.status_code == 401  # the old cookie is dead on the server too


# ---------------------------------------------------------------------------------------------------- API and pages
def test_api_runs_lists_each_run_with_its_test_metrics(client, runs_root):
    client.login()
    runs = client.get("/api/runs").json()
    by_name = {r["name"]: r for r in runs}
    assert set(by_name) == {"alpha", "sweep/beta", "fresh", "evil<img src=x onerror=alert(1)>"}
    for r in runs:
        assert {"name", "path", "experiment", "created", "metrics", "splits"} <= set(r)
    alpha = by_name["alpha"]
    assert alpha["path"] == str(runs_root / "alpha") and alpha["experiment"] == "synthetic"
    assert alpha["created"].startswith("2024-") and alpha["splits"] == ["test"] and alpha["live_sessions"] == 1
    stored = json.loads((runs_root / "alpha" / "backtest" / "test" / "metrics.json").read_text())
    assert alpha["metrics"] == stored
    assert set(alpha["metrics"]["agent"]) >= {"total_return", "sharpe", "max_drawdown", "n_trades"}
    assert "buy_and_hold" in alpha["metrics"]["baselines"]
    assert by_name["sweep/beta"]["experiment"] == "sweep"
    assert by_name["fresh"]["metrics"] is None and by_name["fresh"]["splits"] == []


def test_pages_render_synthetic_runs_escaped_with_local_plotly_only(client):
    client.login()
    runs = {r["name"]: r["id"] for r in client.get("/api/runs").json()}
    page = client.get("/runs")
    assert page.status_code == 200
    assert "<img src=x" not in page.text and "evil&lt;img src=x onerror=alert(1)&gt;" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    run = client.get(f"/run/{runs['alpha']}")
    assert run.status_code == 200 and 'id="run-main"' in run.text
    assert "the run&#x27;s config names no data file" in run.text  # no candles: said, not an empty chart
    assert "<script>" not in run.text.replace('<script type="application/json"', "")  # nothing inline runs
    assert "cdn" not in run.text.lower() and 'src="http' not in run.text
    fresh = client.get(f"/run/{runs['fresh']}")
    assert "No backtest in this run yet" in fresh.text
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "plotly" in js.text[:2000].lower() and len(js.content) > 1_000_000
    assert client.get("/run/000000000000").status_code == 404
    assert client.get("/studies").status_code == 200 and "No study found" in client.get("/studies").text
    compare = client.get(f"/compare?run={runs['alpha']}&run={runs['sweep/beta']}")
    assert compare.status_code == 200 and 'id="compare-chart"' in compare.text
    live = client.get("/live")
    assert live.status_code == 200 and ">s1<" in live.text
