/* spotgym dashboard: draws the pages' Plotly figures, sorts and filters tables, enables "compare" buttons, and
   keeps the Live pages current (the session page polls its JSON endpoint every second). No inline script: the
   figures and the live snapshot come in <script type="application/json"> blocks. */
(function () {
  "use strict";

  var PLOT_CONFIG = {displaylogo: false, responsive: true, scrollZoom: true};
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var CSRF = csrfMeta ? csrfMeta.getAttribute("content") : "";

  function toLogin() {
    window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
  }

  /* ------------------------------------------------------------------ figures */
  function drawPlots() {
    if (typeof Plotly === "undefined") { return; }
    document.querySelectorAll(".plot[data-figure]").forEach(function (div) {
      var src = document.getElementById(div.getAttribute("data-figure"));
      if (!src) { return; }
      var fig = JSON.parse(src.textContent);
      var layout = fig.layout || {};
      layout.autosize = true;
      Plotly.newPlot(div, fig.data || [], layout, PLOT_CONFIG);
    });
  }

  /* ------------------------------------------------------------------ tables: sort, filter */
  function cellValue(row, index, kind) {
    var cell = row.children[index];
    if (!cell) { return null; }
    if (kind === "num") {
      var v = cell.getAttribute("data-v");
      return v === null || v === "" ? null : parseFloat(v);
    }
    return cell.textContent.trim().toLowerCase();
  }

  function makeSortable(table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, index) {
      var kind = th.getAttribute("data-sort");
      if (!kind) { return; }
      th.title = "sort";
      th.addEventListener("click", function () {
        var desc = !th.classList.contains("desc");
        heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(desc ? "desc" : "asc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, index, kind), y = cellValue(b, index, kind);
          if (x === null && y === null) { return 0; }
          if (x === null) { return 1; }  /* missing values last, either way */
          if (y === null) { return -1; }
          var c = x < y ? -1 : x > y ? 1 : 0;
          return desc ? -c : c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  function bindFilter(input) {
    var table = document.getElementById(input.getAttribute("data-filter"));
    var counter = document.querySelector('[data-count-for="' + input.getAttribute("data-filter") + '"]');
    input.addEventListener("input", function () {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var text = row.getAttribute("data-search") || row.textContent.toLowerCase();
        var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
        row.hidden = !ok;
        if (ok) { shown += 1; }
      });
      if (counter) { counter.textContent = shown.toLocaleString("en-US") + " shown"; }
    });
  }

  function bindCompare(form) {
    var button = form.querySelector("[data-compare-button]");
    if (!button) { return; }
    function update() {
      var n = form.querySelectorAll('input[type=checkbox]:checked').length;
      button.disabled = n < 2;
      button.textContent = n ? "Compare selected (" + n + ")" : "Compare selected";
    }
    form.addEventListener("change", update);
    form.addEventListener("refreshed", update);
    update();
  }

  /* ------------------------------------------------------------------ formatting */
  function money(v) {
    return v === null || v === undefined ? "—" :
      v.toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
  }
  function pct(v, signed) {
    if (v === null || v === undefined) { return "—"; }
    var s = (v * 100).toFixed(2) + "%";
    return signed && v > 0 ? "+" + s : s;
  }
  function qty(v) {
    if (v === null || v === undefined) { return "—"; }
    if (v === 0) { return "0"; }
    return parseFloat(v.toPrecision(6)).toString();
  }
  function num(v, d) { return v === null || v === undefined ? "—" : v.toFixed(d === undefined ? 2 : d); }
  function ago(ms) {
    if (!ms) { return ""; }
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 90) { return s + " s ago"; }
    if (s < 5400) { return Math.round(s / 60) + " min ago"; }
    return Math.round(s / 3600) + " h ago";
  }

  /* ------------------------------------------------------------------ live list */
  function bindLiveList(body) {
    var url = body.getAttribute("data-refresh");
    var form = body.closest("form");
    function refresh() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}}).then(function (res) {
        if (res.redirected && res.url.indexOf("/login") >= 0) { toLogin(); return null; }
        return res.ok ? res.text() : null;
      }).then(function (html) {
        if (html === null || html === undefined) { return; }
        var checked = {};
        body.querySelectorAll("input:checked").forEach(function (i) { checked[i.value] = true; });
        body.innerHTML = html;
        body.querySelectorAll("input[type=checkbox]").forEach(function (i) { i.checked = !!checked[i.value]; });
        var any = body.rows.length > 0;
        ["live-list", "live-toolbar"].forEach(function (id) {
          var el = document.getElementById(id); if (el) { el.hidden = !any; }
        });
        var none = document.getElementById("live-none"); if (none) { none.hidden = any; }
        if (form) { form.dispatchEvent(new Event("refreshed")); }
      }).catch(function () { /* the next refresh tries again */ }).then(function () {
        setTimeout(refresh, 3000);
      });
    }
    setTimeout(refresh, 3000);
  }

  /* ------------------------------------------------------------------ live session */
  function liveSession(config) {
    var url = config.getAttribute("data-url");
    var commandUrl = config.getAttribute("data-command-url");
    var snap = JSON.parse(document.getElementById("live-data").textContent);
    var series = {t: [], equity: [], hold: []};
    var plotted = false;
    var statusEl = document.getElementById("command-status");

    function field(name) { return document.querySelector('[data-field="' + name + '"]'); }
    function set(name, text, cls) {
      var el = field(name);
      if (!el) { return; }
      el.textContent = text;
      if (cls !== undefined) { el.className = el.className.split(" ")[0] + (cls ? " " + cls : ""); }
    }

    function merge(eq) {
      if (eq.from === 0 || eq.from !== series.t.length) {
        series = {t: [], equity: [], hold: []};
        if (eq.from !== 0) { return false; }  /* out of step: ask for everything */
      }
      series.t = series.t.concat(eq.t);
      series.equity = series.equity.concat(eq.equity);
      series.hold = series.hold.concat(eq.hold);
      return true;
    }

    function drawEquity() {
      var div = document.getElementById("live-equity");
      var none = document.getElementById("live-equity-empty");
      var any = series.t.length > 0;
      none.hidden = any;
      div.hidden = !any;
      if (!any || typeof Plotly === "undefined") { return; }
      var traces = [
        {x: series.t, y: series.equity, name: "equity", type: "scatter", mode: "lines",
         line: {color: "#1d4ed8", width: 2.2}, hovertemplate: "equity %{y:,.2f}<extra></extra>"},
        {x: series.t, y: series.hold, name: "buy-and-hold (from the first mark)", type: "scatter", mode: "lines",
         line: {color: "#111827", width: 1.4, dash: "dash"}, hovertemplate: "buy-and-hold %{y:,.2f}<extra></extra>"}
      ];
      var layout = {height: 380, margin: {t: 20, b: 50, l: 70, r: 20},
                    hovermode: "x unified", xaxis: {title: {text: "bar (UTC)"}, type: "date", automargin: true},
                    yaxis: {title: {text: "equity"}, tickformat: ",.0f", automargin: true},
                    legend: {orientation: "h", yanchor: "bottom", y: 1.02, x: 0},
                    paper_bgcolor: "#fff", plot_bgcolor: "#fff", uirevision: "keep"};
      layout.xaxis.gridcolor = layout.yaxis.gridcolor = "#eef0f3";
      if (plotted) { Plotly.react(div, traces, layout, PLOT_CONFIG); }
      else { Plotly.newPlot(div, traces, layout, PLOT_CONFIG); plotted = true; }
    }

    function fillTable(id, rows, cells) {
      var table = document.getElementById(id);
      var body = table.tBodies[0];
      var fresh = document.createElement("tbody");
      rows.forEach(function (row) {
        var tr = document.createElement("tr");
        if (row.level === "warn") { tr.className = "warn"; }
        cells(row).forEach(function (c) {
          var td = document.createElement("td");
          var spec = typeof c === "string" ? {text: c} : c;
          td.textContent = spec.text;
          if (spec.cls) { td.className = spec.cls; }
          tr.appendChild(td);
        });
        fresh.appendChild(tr);
      });
      table.replaceChild(fresh, body);
      table.parentNode.hidden = rows.length === 0;
      document.getElementById(id + "-empty").hidden = rows.length > 0;
    }

    function render() {
      var s = snap.session, a = snap.account, f = snap.feed, c = snap.counts;
      var badge = field("state-badge");
      badge.textContent = s.state;
      badge.className = "badge " + (s.state || "");
      field("halted-badge").hidden = !s.halted;
      var paused = field("paused-badge");
      paused.hidden = !s.paused;
      paused.textContent = s.paused === "flatten" ? "flattened: entries paused" : "paused";
      paused.title = "until Resume (a restarted runner forgets it)";
      set("equity", money(a.equity));
      set("equity-detail", a.start_equity === null ? "" : "started at " + money(a.start_equity));
      set("return", pct(a["return"], true), a["return"] > 0 ? "pos" : a["return"] < 0 ? "neg" : "");
      set("return-detail", a.hold_return === null ? "" : "buy-and-hold " + pct(a.hold_return, true));
      set("position", qty(a.position) + (s.symbol ? " " + s.symbol.split("/")[0] : ""));
      set("position-detail", a.exposure === null ? "" : "exposure " + pct(a.exposure));
      set("cash", money(a.cash));
      set("cash-detail", s.symbol ? s.symbol.split("/")[1] || "" : "");
      set("price", a.price === null ? "—" : money(a.price));
      set("last_bar", f.last_bar || "—");
      set("last_bar-detail", f.last_decision_wall_ms ? "decided " + ago(f.last_decision_wall_ms) : "");
      set("feed", f.status, f.status === "ok" ? "pos" : f.status === "stale" ? "neg" : "");
      set("feed-detail", f.errors + " poll errors · " + f.stale_events + " stale · " + f.backfills + " backfills");
      set("activity", c.decisions + " decisions");
      set("activity-detail", c.orders + " orders · " + c.fills + " fills");
      field("controls-note").textContent = s.state === "running" ? "" :
        "This session's runner is stopped: a command waits in the journal until the runner is started again " +
        "(spotgym live run with the same --session and --journal).";
      var pending = field("pending");
      pending.textContent = snap.pending.length ?
        "Waiting for the runner to apply: " + snap.pending.join(", ") + " (it reads commands between bars)." : "";
      drawEquity();
      fillTable("orders-table", snap.orders, function (o) {
        return [{text: o.client_id, cls: "l"}, {text: o.bar || "", cls: "l"}, {text: o.side, cls: "l"}, qty(o.quantity),
                {text: o.status, cls: "l"}, qty(o.filled), String(o.attempts), {text: o.error || "", cls: "l wrap"}];
      });
      fillTable("fills-table", snap.fills, function (x) {
        return [{text: x.time, cls: "l"}, {text: x.side, cls: "l " + (x.side === "buy" ? "pos" : "neg")},
                qty(x.quantity), money(x.price), num(x.fee, 4)];
      });
      fillTable("decisions-table", snap.decisions, function (d) {
        return [{text: d.bar, cls: "l"}, num(d.action, 3), num(d.target, 3),
                {text: d.risk ? d.risk : "passed", cls: "l" + (d.risk ? " neg" : " muted")},
                {text: d.side === "none" ? "—" : d.side, cls: "l"}, d.side === "none" ? "—" : qty(d.quantity),
                money(d.equity), qty(d.position)];
      });
      fillTable("events-table", snap.events, function (e) {
        return [{text: e.time, cls: "l"}, {text: e.bar || "", cls: "l"}, {text: e.kind, cls: "l"},
                {text: e.text, cls: "l wrap"}];
      });
    }

    function poll() {
      var q = "?since=" + series.t.length + "&v=" + encodeURIComponent(snap.version || "");
      fetch(url + q, {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (res) {
        if (res.status === 401) { toLogin(); throw new Error("login"); }
        if (!res.ok) { throw new Error("HTTP " + res.status); }
        return res.json();
      }).then(function (data) {
        if (!data.unchanged) {
          if (!merge(data.equity)) { snap.version = ""; return; }
          snap = data;
          render();
        } else {
          set("last_bar-detail", snap.feed.last_decision_wall_ms ? "decided " + ago(snap.feed.last_decision_wall_ms) : "");
        }
        if (statusEl.getAttribute("data-lost")) { statusEl.textContent = ""; statusEl.removeAttribute("data-lost"); }
      }).catch(function (err) {
        if (err && err.message === "login") { return; }
        statusEl.textContent = "Connection to the dashboard lost; retrying…";
        statusEl.setAttribute("data-lost", "1");
      }).then(function () { setTimeout(poll, 1000); });
    }

    document.querySelectorAll("[data-command]").forEach(function (button) {
      button.addEventListener("click", function () {
        var kind = button.getAttribute("data-command");
        if (!window.confirm(button.getAttribute("data-confirm"))) { return; }
        button.disabled = true;
        statusEl.textContent = "Sending " + kind + "…";
        fetch(commandUrl, {method: "POST", credentials: "same-origin",
                           headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
                           body: JSON.stringify({kind: kind})}).then(function (res) {
          if (res.status === 401) { toLogin(); throw new Error("login"); }
          return res.json().then(function (body) { return {ok: res.ok, body: body}; });
        }).then(function (r) {
          statusEl.textContent = r.ok ? r.body.at + " UTC: " + r.body.message : "Not sent: " + (r.body.error || "error");
        }).catch(function (err) {
          if (!err || err.message !== "login") { statusEl.textContent = "Not sent: the dashboard did not answer."; }
        }).then(function () { button.disabled = false; });
      });
    });

    merge(snap.equity);
    render();
    setTimeout(poll, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawPlots();
    document.querySelectorAll("table.sortable").forEach(makeSortable);
    document.querySelectorAll("input[data-filter]").forEach(bindFilter);
    document.querySelectorAll("form.compare-form").forEach(bindCompare);
    document.querySelectorAll("tbody[data-refresh]").forEach(bindLiveList);
    var live = document.getElementById("live-config");
    if (live) { liveSession(live); }
  });
})();
