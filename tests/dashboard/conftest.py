"""Fixtures of the dashboard tests.

- ``dash_root`` (session): a runs folder holding two real trained runs of real ETH/USDT 1h bars (~20 s, once):
  ``tiny`` (a tiny PPO; backtested on its test and val splits with ``--checkpoint``, so it trades) and ``tiny-cash``
  (the same run backtested as selected: it holds cash, no fill), plus an Optuna study (``tune-tiny/study.db``) whose
  trials point at them.
- ``users_file`` (session): a users file with ``USER`` / ``PASSWORD``.
- ``dashboard`` (session): the dashboard over ``dash_root`` served by uvicorn on a free loopback port (its URL).
- ``browser`` (session): headless Chromium from the OS packages (``/usr/bin/chromium`` or ``$SPOTGYM_CHROMIUM``),
  driven by Playwright; nothing is downloaded. ``open_page(login=True)`` gives a new page (its own context) with
  ``page.console_errors`` collecting console errors and uncaught exceptions.
- ``shots``: the folder screenshots go to (``$SPOTGYM_SCREENSHOTS`` or a temporary folder).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dash_synthetic import PASSWORD, USER

from spotgym.dashboard.users import UserStore

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TINY_EXPERIMENT = {
    "name": "tinydash", "seed": 3,
    "data": {"start": "2023-01-01", "end": "2024-05-31T23:00"},
    "env": {"action": "levels", "window": 8, "episode_length": 96, "levels": [0.0, 0.5, 1.0], "deadband": 0.05},
    "agent": {"algo": "ppo", "timesteps": 256, "n_envs": 4, "eval_every": 128,
              "params": {"n_steps": 32, "batch_size": 64}},
    "evaluation": {"val_size": 0.15, "test_size": 0.2, "purge": 4},
    "tracking": {"wandb": False, "tensorboard": False},
}


def chromium_path() -> str:
    path = os.environ.get("SPOTGYM_CHROMIUM") or shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if not path:
        pytest.fail("no Chromium found (the browser tests drive the OS package, nothing is downloaded): "
                    "run bash scripts/test-services.sh, or set SPOTGYM_CHROMIUM to a Chromium binary")
    return path


def _study(root: Path, runs: list[Path]) -> Path:
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    folder = root / "tune-tiny"
    folder.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{folder / 'study.db'}", study_name="tinydash",
                                direction="maximize")
    dists = {"agent.params.learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
             "agent.params.gamma": FloatDistribution(0.9, 0.999),
             "agent.params.n_steps": IntDistribution(16, 64, step=16)}
    values = [-1.2, -0.4, 0.35, -0.9, 0.1, -1.6, 0.2, -0.3]
    for i, value in enumerate(values):
        params = {"agent.params.learning_rate": 10 ** (-5 + 2 * i / len(values)),
                  "agent.params.gamma": 0.9 + 0.01 * i, "agent.params.n_steps": 16 * (1 + i % 4)}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value,
                                                  user_attrs={"run_dir": str(runs[i % 2])}))
    return folder


@pytest.fixture(scope="session")
def dash_root(tmp_path_factory, eth_1h_path) -> Path:
    from spotgym.cli import main

    root = tmp_path_factory.mktemp("dash_runs")
    exp = dict(TINY_EXPERIMENT, data={**TINY_EXPERIMENT["data"], "path": str(eth_1h_path)})
    spec = root.parent / "tiny.yaml"
    spec.write_text(yaml.safe_dump(exp))
    tiny, cash = root / "tiny", root / "tiny-cash"
    assert main(["train", str(spec), "--quiet", f"--set=run.dir={tiny}"]) == 0
    shutil.copytree(tiny, cash)
    assert main(["backtest", str(tiny), "--checkpoint"]) == 0
    assert main(["backtest", str(tiny), "--checkpoint", "--split", "val"]) == 0
    assert main(["backtest", str(cash)]) == 0  # as selected: cash
    _study(root, [tiny, cash])
    return root


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dash_config") / "users.json"
    UserStore(path).add(USER, PASSWORD)
    return path


@pytest.fixture(scope="session")
def dashboard(dash_root, users_file) -> Iterator[Any]:
    from spotgym.dashboard.app import create_app
    from spotgym.sim import serve_in_thread

    app = create_app(runs=[dash_root], users=users_file)
    with serve_in_thread(app) as url:
        app.state.url = url
        yield app
    app.state.live.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("SPOTGYM_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")  # not session: Playwright's sync API keeps an event loop running in this thread
def browser() -> Iterator[Any]:  # until it stops, and later tests' asyncio.run() would refuse to start
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


def login(page, user: str = USER, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/runs")


@pytest.fixture
def open_page(browser, dashboard) -> Iterator[Callable[..., Any]]:
    contexts = []

    def make(login_first: bool = True):
        ctx = browser.new_context(base_url=dashboard.state.url, viewport={"width": 1400, "height": 900})
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.console_errors = []
        page.on("console", lambda m: page.console_errors.append(f"{page.url}: {m.text}") if m.type == "error"
                else None)
        page.on("pageerror", lambda e: page.console_errors.append(f"{page.url}: uncaught {e}"))
        if login_first:
            login(page)
        return page

    yield make
    for ctx in contexts:
        ctx.close()
