"""The dashboard's FastAPI app: ``create_app(runs=..., journals=..., users=...)``; ``serve(app, host, port)``.

Every route but ``GET/POST /login`` needs a session: without one an API route (``/api/...``) answers 401 JSON and a
page redirects to ``/login?next=...``. State-changing requests (``POST /logout``, ``POST /api/live/<id>/command``)
need the session's CSRF token (header ``X-CSRF-Token`` or form field ``csrf_token``): 403 otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import math
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from spotgym.dashboard import pages
from spotgym.dashboard.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, LoginLimiter, SessionStore, session_cookie
from spotgym.dashboard.catalog import Catalog
from spotgym.dashboard.figures import Curve, common_span, compare_figure, compare_metrics, run_figures, veto_rows
from spotgym.dashboard.live_view import DASHBOARD_COMMANDS, LiveSources
from spotgym.dashboard.studies import StudyBook
from spotgym.dashboard.users import UserError, UserStore

__all__ = ["create_app", "serve"]

STATIC = Path(__file__).resolve().parent / "static"
PUBLIC = {("GET", "/login"), ("HEAD", "/login"), ("POST", "/login")}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
       "object-src 'none'")
STUDY_PLOTS = (("Optimisation history", "plot_optimization_history"),
               ("Parameter importances", "plot_param_importances"),
               ("Parallel coordinates", "plot_parallel_coordinate"))


class _Static:
    """plotly.js from the installed plotly package and the dashboard's own script, gzip-compressed once."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, bytes, str]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> tuple[bytes, bytes, str] | None:
        with self._lock:
            if name not in self._files:
                if name == "plotly.min.js":
                    from plotly.offline import get_plotlyjs

                    raw = get_plotlyjs().encode("utf-8")
                elif name == "dashboard.js":
                    raw = (STATIC / "dashboard.js").read_bytes()
                else:
                    return None
                self._files[name] = (raw, gzip.compress(raw, 6), hashlib.sha1(raw).hexdigest()[:16])
            return self._files[name]


def _next_url(value: str | None) -> str:
    """A local path to go to after the login (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/runs"
    return value


def create_app(runs: list[str | Path] = ("runs",), journals: list[str] = (), *, users: UserStore | str | Path | None = None,
               studies: list[str] = (), login_limit: int = 5, login_window_s: float = 60.0) -> FastAPI:
    """The dashboard over the ``runs`` folders, the ``journals`` (paths or URLs) and the Optuna storages ``studies``;
    users from ``users`` (a ``UserStore`` or its file; default the user's config folder)."""
    store = users if isinstance(users, UserStore) else UserStore(users)
    catalog = Catalog(list(runs), list(studies))
    live = LiveSources(catalog, list(journals))
    book = StudyBook()
    sessions = SessionStore()
    limiter = LoginLimiter(limit=login_limit, window_s=login_window_s)
    static = _Static()
    roots = [str(r) for r in runs]

    app = FastAPI(title="spotgym dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.catalog, app.state.live, app.state.users, app.state.sessions = catalog, live, store, sessions
    app.state.limiter = limiter

    # ------------------------------------------------------------------ the guard
    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        path, method = request.url.path, request.method
        if (method, path) in PUBLIC:
            response = await call_next(request)
        else:
            session = sessions.get(request.cookies.get(COOKIE))
            if session is None:
                if path.startswith("/api/"):
                    response = JSONResponse({"error": "login required"}, status_code=401)
                else:
                    target = path + (f"?{request.url.query}" if request.url.query else "")
                    response = RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
            else:
                request.state.session = session
                if method not in SAFE_METHODS and not session.csrf_ok(request.headers.get(CSRF_HEADER)):
                    form = await _form(request)
                    if not session.csrf_ok(form.get(CSRF_FIELD)):
                        response = (JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
                                    if path.startswith("/api/") else
                                    HTMLResponse(pages.error_page("Forbidden", "The form's CSRF token is missing or "
                                                                  "stale: reload the page and try again.",
                                                                  user=session.user, csrf=session.csrf), 403))
                        return _headers(response, request, started)
                response = await call_next(request)
        return _headers(response, request, started)

    def _headers(response: Response, request: Request, started: float) -> Response:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def who(request: Request) -> tuple[str, str]:
        s = request.state.session
        return s.user, s.csrf

    # ------------------------------------------------------------------ login / logout
    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/runs"):  # noqa: A002 - the query parameter's name
        if sessions.get(request.cookies.get(COOKIE)) is not None:
            return RedirectResponse(_next_url(next), status_code=303)
        return HTMLResponse(pages.login_page(next_url=_next_url(next), no_users=_no_users()))

    def _no_users() -> bool:
        try:
            return len(store) == 0
        except UserError:
            return True

    @app.post("/login")
    async def login(request: Request):
        form = await _form(request)
        username, password = form.get("username", "").strip(), form.get("password", "")
        next_url = _next_url(form.get("next"))
        address = request.client.host if request.client else "?"
        wait = limiter.retry_after(username, address)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return HTMLResponse(pages.login_page(error=f"Too many failed sign-ins: try again in {seconds} s.",
                                                 next_url=next_url, username=username), status_code=429,
                                headers={"Retry-After": str(seconds)})
        try:
            ok = bool(username) and await run_in_threadpool(store.verify, username, password)
        except UserError as exc:
            return HTMLResponse(pages.login_page(error=str(exc), next_url=next_url), status_code=500)
        if not ok:
            limiter.failed(username, address)
            return HTMLResponse(pages.login_page(error="Wrong user name or password.", next_url=next_url,
                                                 username=username, no_users=_no_users()), status_code=401)
        limiter.succeeded(username, address)
        old = sessions.get(request.cookies.get(COOKIE))
        if old is not None:
            sessions.drop(old.token)
        session = sessions.create(username)
        response = RedirectResponse(next_url, status_code=303)
        response.headers.append("set-cookie", session_cookie(session.token, secure=request.url.scheme == "https",
                                                             max_age=int(sessions.max_s)))
        return response

    @app.post("/logout")
    def logout(request: Request):
        sessions.drop(request.state.session.token)
        response = RedirectResponse("/login", status_code=303)
        response.headers.append("set-cookie", session_cookie("", secure=request.url.scheme == "https", max_age=0))
        return response

    # ------------------------------------------------------------------ static
    @app.get("/static/{name}")
    def static_file(name: str, request: Request):
        found = static.get(name)
        if found is None:
            return Response(status_code=404)
        raw, packed, tag = found
        headers = {"Cache-Control": "private, max-age=86400", "ETag": f'"{tag}"', "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == f'"{tag}"':
            return Response(status_code=304, headers=headers)
        media = "text/javascript; charset=utf-8"
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(packed, media_type=media, headers={**headers, "Content-Encoding": "gzip"})
        return Response(raw, media_type=media, headers=headers)

    # ------------------------------------------------------------------ runs
    @app.get("/")
    def home():
        return RedirectResponse("/runs", status_code=303)

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page(request: Request):
        user, csrf = who(request)
        return HTMLResponse(pages.runs_page(catalog.scan(), roots, user=user, csrf=csrf))

    @app.get("/api/runs")
    def api_runs():
        return JSONResponse([r.api() for r in catalog.scan().runs])

    @app.get("/run/{run_id}", response_class=HTMLResponse)
    def run_page(run_id: str, request: Request, split: str | None = None):
        user, csrf = who(request)
        run = catalog.run(run_id)
        if run is None:
            return HTMLResponse(pages.error_page("Run not found", f"No run {run_id} under the runs folders (moved or "
                                                 "deleted?).", user=user, csrf=csrf), 404)
        name = split if split in run.splits else (run.splits[0] if run.splits else None)
        data = figures = error = None
        vetoes: Any = ([], {}, 0)
        if name is not None:
            data = catalog.split(run, name)
            try:
                figures = run_figures(data, run.algo or "agent")
            except (ValueError, TypeError, KeyError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            vetoes = veto_rows(data.decisions)
        wf = catalog.walkforward(run)
        from spotgym.backtest import walkforward_section

        try:
            wf_html = walkforward_section(wf) if wf else None
        except (KeyError, TypeError, ValueError):
            wf_html = None
        if wf_html:  # the folds' run directories as links to their pages
            for fold in wf.get("folds", []):
                hit = catalog.run_at(fold.get("run_dir"))
                if hit is not None:
                    cell = f"<td>{html.escape(str(fold['run_dir']))}</td>"
                    wf_html = wf_html.replace(cell, f'<td><a href="/run/{hit.id}">{html.escape(hit.name)}</a></td>')
        return HTMLResponse(pages.run_page(run, data, figures=figures, figure_error=error, vetoes=vetoes,
                                           selection=_selection(run.path), walkforward=wf_html, user=user, csrf=csrf))

    # ------------------------------------------------------------------ studies
    def _run_links() -> dict[str, tuple[str, str]]:
        return {str(r.path): (r.id, r.name) for r in catalog.last.runs}

    @app.get("/studies", response_class=HTMLResponse)
    def studies_page(request: Request):
        user, csrf = who(request)
        scan = catalog.scan()
        rows, problems = [], []
        for ref in scan.studies:
            try:
                rows += book.rows(ref)
            except Exception as exc:  # a locked or foreign database: say so, list the others
                problems.append(f"{ref.where}: cannot be read ({type(exc).__name__}: {str(exc)[:200]})")
        return HTMLResponse(pages.studies_page(rows, problems, _resolved_links(rows), user=user, csrf=csrf))

    def _resolved_links(rows) -> dict[str, tuple[str, str]]:
        links = _run_links()
        out = {}
        for r in rows:
            d = r.best_run_dir
            if d:
                hit = links.get(str(Path(d).expanduser().resolve()))
                if hit:
                    out[d] = hit
        return out

    @app.get("/study/{study_id}", response_class=HTMLResponse)
    def study_page(study_id: str, request: Request, name: str = ""):
        user, csrf = who(request)
        ref = catalog.study(study_id)
        row = None
        if ref is not None:
            row = next((r for r in book.rows(ref) if r.name == name), None)
        if row is None:
            return HTMLResponse(pages.error_page("Study not found", f"No study {name!r} in that storage.", user=user,
                                                 csrf=csrf), 404)
        from spotgym.dashboard.figures import study_figure

        study = book.load(ref, name)
        plots = [(title, *study_figure(study, fn)) for title, fn in STUDY_PLOTS]
        trials = study.get_trials(deepcopy=False)
        links = _run_links()
        resolved = {}
        for t in trials:
            d = t.user_attrs.get("run_dir")
            if d and (hit := links.get(str(Path(d).expanduser().resolve()))):
                resolved[str(d)] = hit
        return HTMLResponse(pages.study_page(row, plots, trials, resolved, user=user, csrf=csrf))

    # ------------------------------------------------------------------ live
    def _live_items():
        catalog.scan() if not catalog.last.runs else None
        items = []
        for ref in live.sessions():
            try:
                snap = live.snapshot(ref, watch=False)
                acc = snap["account"]
                status = {"last_bar": snap["session"]["last_bar"], "equity": acc["equity"], "return": acc["return"],
                          "position": acc["position"], "fills": snap["counts"]["fills"]}
            except Exception:  # a journal mid-migration or locked: the row shows what the list knows
                status = None
            items.append((ref, status))
        return items

    @app.get("/live", response_class=HTMLResponse)
    def live_list(request: Request, rows: int = 0):
        user, csrf = who(request)
        if rows:
            catalog.scan()
            return HTMLResponse(pages.live_rows(_live_items()))
        catalog.scan()
        return HTMLResponse(pages.live_list_page(_live_items(), live.problems, user=user, csrf=csrf))

    @app.get("/api/live")
    def api_live():
        catalog.scan()
        return JSONResponse([{"id": ref.id, "session": ref.name, "journal": ref.where, "mode": ref.row.get("mode"),
                              "symbol": ref.row.get("symbol"), "state": ref.row.get("state"), **(status or {})}
                             for ref, status in _live_items()])

    def _session(session_id: str):
        """A live session by id (the runs rescanned once when unknown: its journal may be new)."""
        ref = live.get(session_id)
        if ref is None:
            catalog.scan()
            ref = live.get(session_id)
        return ref

    @app.get("/live/{session_id}", response_class=HTMLResponse)
    def live_page(session_id: str, request: Request):
        user, csrf = who(request)
        ref = _session(session_id)
        if ref is None:
            return HTMLResponse(pages.error_page("Session not found", f"No live session {session_id} in the journals.",
                                                 user=user, csrf=csrf), 404)
        return HTMLResponse(pages.live_page(ref, LiveSources.view(live.snapshot(ref)), user=user, csrf=csrf))

    @app.get("/api/live/{session_id}")
    def api_live_session(session_id: str, since: int = 0, v: str | None = None):
        ref = _session(session_id)
        if ref is None:
            return JSONResponse({"error": f"no live session {session_id}"}, status_code=404)
        return JSONResponse(LiveSources.view(live.snapshot(ref), since, v))

    @app.post("/api/live/{session_id}/command")
    async def api_command(session_id: str, request: Request):
        user = request.state.session.user
        kind = ""
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                kind = str((await request.json()).get("kind", ""))
            except (ValueError, AttributeError):
                kind = ""
        else:
            kind = (await _form(request)).get("kind", "")
        if kind not in DASHBOARD_COMMANDS:
            return JSONResponse({"error": f"command must be one of {', '.join(DASHBOARD_COMMANDS)}"}, status_code=400)
        ref = await run_in_threadpool(_session, session_id)
        if ref is None:
            return JSONResponse({"error": f"no live session {session_id}"}, status_code=404)
        await run_in_threadpool(live.command, ref, kind, user)
        row = await run_in_threadpool(live.journal(ref).session_row)
        state = (row or {}).get("state")
        note = ("the runner applies it before its next decision" if state == "running"
                else "the session is stopped: its runner applies it when it is started again")
        return JSONResponse({"ok": True, "kind": kind, "user": user, "session": ref.name,
                             "at": time.strftime("%H:%M:%S", time.gmtime()), "message": f"{kind} sent by {user}: {note}"})

    # ------------------------------------------------------------------ compare
    @app.get("/compare", response_class=HTMLResponse)
    def compare(request: Request, split: str = "test"):
        user, csrf = who(request)
        query = parse_qs(request.url.query)
        run_ids, live_ids = query.get("run", []), query.get("live", [])
        scan = catalog.scan()
        refs = live.sessions()
        curves, notes = [], []
        for rid in dict.fromkeys(run_ids):
            run = catalog.run(rid)
            if run is None:
                notes.append(f"run {rid} not found")
                continue
            if not run.splits:
                notes.append(f"{run.name} has no backtest")
                continue
            name = split if split in run.splits else run.splits[0]
            if name != split:
                notes.append(f"{run.name} has no {split} backtest: its {name} backtest is shown")
            data = catalog.split(run, name)
            try:
                curves.append(_run_curve(run, name, data))
            except (ValueError, TypeError, KeyError) as exc:
                notes.append(f"{run.name} ({name}): {exc}")
        by_id = {r.id: r for r in refs}
        for sid in dict.fromkeys(live_ids):
            ref = by_id.get(sid)
            if ref is None:
                notes.append(f"live session {sid} not found")
                continue
            curve = _live_curve(ref)
            if curve is None:
                notes.append(f"session {ref.name} has fewer than two equity marks")
            else:
                curves.append(curve)
        span = common_span(curves) if len(curves) >= 2 else None
        fig = compare_figure(curves, span) if len(curves) >= 2 else None
        metrics = compare_metrics(curves, span) if len(curves) >= 2 else []
        return HTMLResponse(pages.compare_page(curves=curves, metrics=metrics, fig=fig, span=span, notes=notes,
                                               runs=scan.runs, sessions=refs, chosen=set(run_ids) | set(live_ids),
                                               split=split, user=user, csrf=csrf))

    def _live_curve(ref) -> Curve | None:
        j = live.journal(ref)
        eq = j.frame("equity")
        if len(eq) < 2:
            return None
        index = pd.DatetimeIndex(pd.to_datetime(eq["bar_ms"].to_numpy(np.int64), unit="ms", utc=True))
        equity = pd.Series(eq["equity"].to_numpy(np.float64), index=index)
        price = eq["price"].to_numpy(np.float64)
        hold = pd.Series(equity.iloc[0] * price / price[0], index=index) if price[0] > 0 else None
        f = j.frame("fills")
        trades = None
        if len(f):
            trades = pd.DataFrame({"timestamp": pd.to_datetime(f["time_ms"].to_numpy(np.int64), unit="ms", utc=True),
                                   "side": f["side"], "price": f["price"], "quantity": f["quantity"],
                                   "fee": f["fee_quote"]})
        exposure = pd.Series(eq["exposure"].to_numpy(np.float64), index=index)
        return Curve(f"{ref.name} (live {ref.row.get('mode')})", "live", equity.groupby(level=0).last(), trades,
                     hold, f"/live/{ref.id}", exposure.groupby(level=0).last())

    return app


def _run_curve(run, split: str, data) -> Curve:
    eq = data.equity
    index = pd.DatetimeIndex(pd.to_datetime(eq["timestamp"], utc=True))
    equity = pd.Series(eq["equity"].to_numpy(np.float64), index=index)
    hold = (pd.Series(eq["buy_and_hold"].to_numpy(np.float64), index=index) if "buy_and_hold" in eq.columns
            else None)
    exposure = pd.Series(eq["exposure"].to_numpy(np.float64), index=index) if "exposure" in eq.columns else None
    return Curve(f"{run.name} ({split})", "backtest", equity, data.trades, hold, f"/run/{run.id}?split={quote(split)}",
                 exposure)


_SELECTION: dict[Path, tuple[int, str | None]] = {}


def _selection(run_dir: Path) -> str | None:
    """The run's model-selection line (``spotgym.workflows.train.selection_summary``), cached per metrics.json."""
    path = run_dir / "metrics.json"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    cached = _SELECTION.get(run_dir)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        from spotgym.workflows.train import selection_summary

        text = selection_summary(run_dir)
    except Exception:  # an older or foreign metrics.json: no line rather than no page
        text = None
    _SELECTION[run_dir] = (stamp, text)
    return text


async def _form(request: Request) -> dict[str, str]:
    """An url-encoded form body as {name: first value} (the body is read once and kept on the request)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = await request.body()
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items()}


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (127.0.0.0/8, ::1)."""
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8050, *, log_level: str = "warning",
          announce=print) -> None:
    """Run ``app`` with uvicorn in this thread until interrupted."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url = f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}/"

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                announce(f"dashboard: listening on {url}", flush=True)

    server = _Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
