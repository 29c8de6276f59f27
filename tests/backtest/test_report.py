"""HTML report: self-contained, shows every fill and the metrics, stays fast and small on 60k bars."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.offline
import pytest

from spotgym.backtest import bars_per_year, compute_metrics, write_report


def _alternating_run(bars: pd.DataFrame, every: int) -> tuple[dict[str, pd.Series], pd.DataFrame, dict]:
    """All-in buy / all-out sell every ``every`` bars at the next open (0.1 % fee) and a buy-and-hold."""
    opens, close, idx = bars["open"].to_numpy(), bars["close"].to_numpy(), bars.index
    cash, units, eq, fills = 1000.0, 0.0, [1000.0], []
    for t in range(len(bars) - 1):
        px = opens[t + 1]
        if t % every == 0:
            side = "buy" if units == 0 else "sell"
            qty = cash / (px * 1.001) if side == "buy" else units
            fee = qty * px * 0.001
            cash += -qty * px - fee if side == "buy" else qty * px - fee
            units = qty if side == "buy" else 0.0
            fills.append((idx[t + 1], side, px, qty, qty * px, fee))
        eq.append(cash + units * close[t + 1])
    trades = pd.DataFrame(fills, columns=["timestamp", "side", "price", "quantity", "notional", "fee"])
    curves = {
        "agent": pd.Series(eq, index=idx),
        "buy_and_hold": pd.Series(np.r_[1000.0, 1000.0 * close[1:] / opens[1]], index=idx),
        "macd_rule": pd.Series(np.r_[1000.0, 1000.0 + np.cumsum(np.diff(close))], index=idx).clip(lower=1.0),
    }
    ppy = bars_per_year("1h")
    metrics = {"agent": compute_metrics(curves["agent"], trades, periods_per_year=ppy),
               "baselines": {name: compute_metrics(curves[name], periods_per_year=ppy)
                             for name in ("buy_and_hold", "macd_rule")}}
    return curves, trades, metrics


@pytest.fixture(scope="module")
def eth_bars(eth_1h_path) -> pd.DataFrame:
    raw = pd.read_csv(eth_1h_path)
    return raw.set_index(pd.to_datetime(raw["timestamp"], unit="ms", utc=True))[["open", "high", "low", "close"]]


@pytest.fixture(scope="module")
def small_report(eth_bars, tmp_path_factory):
    bars = eth_bars.iloc[:600]
    curves, trades, metrics = _alternating_run(bars, every=25)
    path = write_report(tmp_path_factory.mktemp("report") / "report.html", bars=bars, equity=curves,
                        trades=trades, metrics=metrics, title="ETH <test>")
    return path.read_text(encoding="utf-8"), trades, metrics


def test_report_is_self_contained(small_report):
    page, _, _ = small_report
    assert page.startswith("<!DOCTYPE html>")
    assert plotly.offline.get_plotlyjs()[-2000:] in page  # the plotly.js source is inlined
    assert page.count(plotly.offline.get_plotlyjs()[-200:]) == 1  # once, not per figure
    assert not re.search(r"<script[^>]+src=", page)
    assert "<title>ETH &lt;test&gt;</title>" in page  # escaped


def test_report_shows_every_fill(small_report):
    page, trades, _ = small_report
    n_buy, n_sell = int((trades["side"] == "buy").sum()), int((trades["side"] == "sell").sum())
    assert n_buy == 12 and n_sell == 12
    assert f"Buy ▲ ({n_buy})" in page and f"Sell ▼ ({n_sell})" in page
    assert f"{len(trades)} fills ({n_buy} buys ▲, {n_sell} sells ▼)" in page
    assert "Round-trip returns after fees (12 trips" in page


def test_report_metrics_table_and_verdict(small_report):
    page, _, metrics = small_report
    agent, hold = metrics["agent"], metrics["baselines"]["buy_and_hold"]
    for name in ("agent", "buy_and_hold", "macd_rule"):
        assert f"<th>{name}</th>" in page
    assert f"{agent['total_return'] * 100:+.2f}%" in page
    assert f"{hold['total_return'] * 100:+.2f}%" in page
    assert f"{agent['sharpe']:.2f}" in page
    assert f"{agent['max_drawdown'] * 100:.2f}%" in page
    beat_return = agent["total_return"] > hold["total_return"]
    assert ("<b>beat</b> buy-and-hold on return" in page) == beat_return
    assert ("<b>did not beat</b> buy-and-hold on return" in page) == (not beat_return)
    assert page.count('class="agent beat"') + page.count('class="agent lost"') == 2


def test_long_series_is_downsampled_but_keeps_every_marker(eth_bars, tmp_path):
    assert len(eth_bars) > 60_000
    curves, trades, metrics = _alternating_run(eth_bars, every=500)
    path = write_report(tmp_path / "long.html", bars=eth_bars, equity=curves, trades=trades, metrics=metrics)
    page = path.read_text(encoding="utf-8")
    assert f"(1D candles from {len(eth_bars):,} bars)" in page
    assert path.stat().st_size < 12e6
    n_buy = int((trades["side"] == "buy").sum())
    assert f"Buy ▲ ({n_buy})" in page and f"Sell ▼ ({len(trades) - n_buy})" in page


def test_report_without_trades_or_buy_and_hold(eth_bars, tmp_path):
    bars = eth_bars.iloc[:50]
    flat = pd.Series(1000.0, index=bars.index)
    metrics = {"agent": compute_metrics(flat), "baselines": {}}
    page = write_report(tmp_path / "r.html", bars=bars, equity={"agent": flat}, trades=None,
                        metrics=metrics).read_text(encoding="utf-8")
    assert "No buy-and-hold baseline" in page
    assert "Round-trip returns after fees (none closed)" in page
    assert "0 fills (0 buys ▲, 0 sells ▼)" in page


def test_report_bad_inputs_are_named(eth_bars, tmp_path):
    bars = eth_bars.iloc[:10]
    flat = pd.Series(1000.0, index=bars.index)
    metrics = {"agent": compute_metrics(flat), "baselines": {}}
    with pytest.raises(ValueError, match="bars index is not strictly increasing at position 1"):
        write_report(tmp_path / "r.html", bars=bars.iloc[[1, 0, 2]], equity={"agent": flat}, trades=None,
                     metrics=metrics)
    with pytest.raises(ValueError, match=r"bars is missing columns \['high'\]"):
        write_report(tmp_path / "r.html", bars=bars.drop(columns="high"), equity={"agent": flat}, trades=None,
                     metrics=metrics)
    with pytest.raises(ValueError, match="'agent' key"):
        write_report(tmp_path / "r.html", bars=bars, equity={"agent": flat}, trades=None, metrics=metrics["agent"])
    with pytest.raises(ValueError, match="equity is empty"):
        write_report(tmp_path / "r.html", bars=bars, equity={}, trades=None, metrics=metrics)
