"""``spotgym dashboard``: runs, backtests, tuning studies and live sessions in one authenticated web app.

FastAPI serving server-rendered pages with Plotly figures (plotly.js served from the installed ``plotly`` package,
no CDN) and a little vanilla JavaScript. Modules:

- ``users``: the users file (argon2 hashes only, mode 0600, in ``$XDG_CONFIG_HOME/spotgym/`` or
  ``~/.config/spotgym/``);
- ``auth``: sessions (HttpOnly, SameSite=Strict cookie), per-session CSRF tokens, the failed-login rate limit;
- ``catalog``: run directories, backtest splits, Optuna studies and journals found under ``--runs`` roots;
- ``live_view``: a live session's journal as the JSON the Live page polls (cached per journal change);
- ``figures`` / ``pages``: the Plotly figures (the backtest report's, reused) and the HTML;
- ``app``: the FastAPI app (``create_app``) and its server; ``commands``: the CLI (``add_dashboard_commands``).

API keys are never shown, entered or stored here: the CLI keystore (``spotgym keys``) owns them.
"""
