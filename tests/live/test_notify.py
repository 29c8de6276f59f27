"""Alerts (``spotgym.live.notify``) against loopback receivers: a webhook / Telegram stand-in (``http.server``) and a
minimal SMTP server (``socketserver``). Delivery of each kind, filters, de-duplication, rate limits, retries that
never block the caller, a dead receiver dropped with a log line, and no secret in anything that leaves."""

from __future__ import annotations

import base64
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, quote_plus

import pytest

from spotgym.live.notify import ALERT_KINDS, DailyTracker, NotifyHub, check_notify_config, dedupe_key

SESSION = "sim-ETHUSDT-test"
API_KEY = "AKxq7RkT2mZ9pLw4vN8sHj3cYb6eFd1g"
API_SECRET = "sEcR3t/+x9Qw2Er4Ty6Ui8Op0As1Df3Gh5Jk7Lz9Xc"
TG_TOKEN = "123456789:AAHtelegram-SECRET_token-value"
SMTP_PASSWORD = "smtp-pa$$word-9f8e7d"
HOOK_SECRET = "Bearer hook-auth-0c1d2e3f"


# ------------------------------------------------------------------------------------------------- receivers
class Receiver:
    """A loopback HTTP server recording POSTs; ``fail_next`` requests answer 500, each request waits ``delay``."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.attempts = 0
        self.fail_next = 0
        self.fail_status = 500
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.attempts += 1
                    fail = receiver.fail_next > 0
                    if fail:
                        receiver.fail_next -= 1
                if receiver.delay:
                    time.sleep(receiver.delay)
                if fail:
                    self.send_response(receiver.fail_status)
                    self.end_headers()
                    self.wfile.write(b'{"ok": false, "description": "try later"}')
                    return
                if "/bot" in self.path and not self.path.endswith(f"/bot{TG_TOKEN}/sendMessage"):
                    self.send_response(404)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.posts.append({"path": self.path, "headers": dict(self.headers), "raw": body.decode(),
                                           "json": json.loads(body)})
                reply = b'{"ok": true, "result": {"message_id": 1}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kinds(self) -> list[str]:
        return [p["json"].get("kind") for p in self.posts]


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, AUTH PLAIN / LOGIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def reply(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())

    def handle(self) -> None:
        box = self.server.box
        self.reply("220 loopback ESMTP")
        mail: dict = {"rcpt": []}
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250-loopback\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
            elif verb == "AUTH":
                parts = line.split()
                if parts[1].upper() == "PLAIN":
                    if len(parts) < 3:
                        self.reply("334 ")
                        token = self.rfile.readline().decode().strip()
                    else:
                        token = parts[2]
                    _, user, password = base64.b64decode(token).decode().split("\0")
                else:  # LOGIN
                    self.reply("334 VXNlcm5hbWU6")
                    user = base64.b64decode(self.rfile.readline().strip()).decode()
                    self.reply("334 UGFzc3dvcmQ6")
                    password = base64.b64decode(self.rfile.readline().strip()).decode()
                box.auth.append((user, password))
                self.reply("235 ok")
            elif verb == "MAIL":
                mail = {"from": line[10:].strip(), "rcpt": []}
                self.reply("250 ok")
            elif verb == "RCPT":
                mail["rcpt"].append(line[8:].strip())
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 end with .")
                data = b""
                while True:
                    chunk = self.rfile.readline()
                    if chunk in (b".\r\n", b""):
                        break
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                mail["data"] = data
                box.mails.append(mail)
                self.reply("250 queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class SMTPBox:
    def __init__(self) -> None:
        self.mails: list[dict] = []
        self.auth: list[tuple[str, str]] = []
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
        self.server.daemon_threads = True
        self.server.box = self
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def messages(self):
        return [message_from_bytes(m["data"], policy=email_policy) for m in self.mails]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def smtp() -> Iterator[SMTPBox]:
    box = SMTPBox()
    yield box
    box.close()


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/hook"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


SAMPLES = {  # one payload of each default alert kind (as the journal / runner write them)
    "session_ready": {"equity": 10_000.0, "cash": 10_000.0, "position": 0.0, "resumed": False},
    "session_stop": {"reason": "done", "equity": 10_050.0},
    "stopped_stale": {},
    "fill": {"trade_id": "t1", "client_id": "sg-abc-1", "side": "buy", "quantity": 0.5, "price": 3000.0,
             "fee_quote": 1.5},
    "halted": {"reason": "banned until 12:00"},
    "feed_stale": {"last_bar_ms": 1_717_200_000_000, "lag_s": 7300.0},
    "feed_recovered": {"bars": 2},
    "order_rejected": {"client_id": "sg-abc-2", "error": "InsufficientFunds"},
    "order_ambiguous": {"client_id": "sg-abc-3", "error": "RequestTimeout"},
    "order_given_up": {"client_id": "sg-abc-4"},
    "blocked": {"client_id": "sg-abc-5", "reason": "unresolved"},
    "ban": {"retry_after_s": 120.0, "error": "418"},
    "overfill": {"client_id": "sg-abc-6", "trade_id": "t9"},
    "reconcile_difference": {"journal_position": 1.0, "exchange_position": 0.5},
}


# ------------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("config, match", [
    ({"kind": "sms"}, "'kind' must be one of"),
    ({"kind": "webhook"}, "missing key 'url'"),
    ({"kind": "webhook", "url": "http://x", "urll": "http://y"}, "unknown key 'urll'"),
    ({"kind": "webhook", "url": "ftp://x"}, "'url' must be an http"),
    ({"kind": "telegram", "token": "t0k3n"}, "missing key 'chat_id'"),
    ({"kind": "email", "host": "h", "sender": "a@b", "to": ["c@d"], "port": 70000}, "'port' must be 1..65535"),
    ({"kind": "email", "host": "h", "sender": "a@b", "to": "nobody"}, "'to' must be"),
    ({"kind": "email", "host": "h", "sender": "a@b", "to": "c@d", "password": "x"}, "'password' needs 'username'"),
    ({"kind": "log", "events": ["fils"]}, "unknown event kind 'fils'"),
    ({"kind": "log", "max_tries": 0}, "'max_tries' must be >= 1"),
    ({"kind": "log", "min_interval_s": "soon"}, "'min_interval_s' must be a number"),
    ({"kind": "log", "level": "loud"}, "'level' must be one of"),
])
def test_bad_config_names_the_key(config, match):
    with pytest.raises(ValueError, match=match):
        check_notify_config([config])


def test_config_defaults():
    (cfg,) = check_notify_config([{"kind": "telegram", "token": "t0k3n", "chat_id": 42}])
    assert cfg["base_url"] == "https://api.telegram.org" and cfg["max_tries"] == 5 and cfg["events"] is None
    assert check_notify_config(None) == []
    with pytest.raises(ValueError, match="expected a list"):
        check_notify_config("webhook")


# ------------------------------------------------------------------------------------------------- delivery
def test_webhook_delivers_each_alert_kind(receiver):
    with NotifyHub([{"kind": "webhook", "url": receiver.url + "/hook"}], session=SESSION) as hub:
        for kind, payload in SAMPLES.items():
            hub.emit(kind, payload, bar_ms=1_717_200_000_000)
        hub.emit("decision", {"risk": "max_drawdown", "halted": 0})  # a veto
        hub.emit("decision", {"risk": "", "halted": 0})  # a plain decision: no alert
        hub.emit("intent", {"client_id": "sg-x"})  # not an alert by default
        hub.daily_summary(pnl=50.0, drawdown=0.01, trades=3, fees=4.5, equity=10_050.0, day="2024-06-01")
        assert hub.flush(10)
    assert sorted(receiver.kinds()) == sorted([*SAMPLES, "risk_veto", "daily_summary"])
    assert set(receiver.kinds()) <= ALERT_KINDS
    fill = next(p["json"] for p in receiver.posts if p["json"]["kind"] == "fill")
    assert fill["session"] == SESSION and fill["bar_ms"] == 1_717_200_000_000 and fill["bar"].startswith("2024-06-01")
    assert "buy 0.5 @ 3,000" in fill["text"] and fill["payload"]["trade_id"] == "t1"
    daily = next(p["json"] for p in receiver.posts if p["json"]["kind"] == "daily_summary")
    assert "PnL 50" in daily["text"] and "3 trades" in daily["text"] and daily["payload"]["drawdown"] == 0.01


def test_telegram_stand_in(receiver):
    cfg = [{"kind": "telegram", "token": TG_TOKEN, "chat_id": "-100777", "base_url": receiver.url + "/tg"}]
    with NotifyHub(cfg, session=SESSION) as hub:
        hub.emit("fill", SAMPLES["fill"])
        assert hub.flush(10)
    (post,) = receiver.posts
    assert post["path"] == f"/tg/bot{TG_TOKEN}/sendMessage"
    assert post["json"]["chat_id"] == "-100777" and "fill" in post["json"]["text"] and SESSION in post["json"]["text"]
    assert TG_TOKEN not in post["raw"]


def test_email_over_loopback_smtp(smtp):
    cfg = [{"kind": "email", "host": "127.0.0.1", "port": smtp.port, "sender": "bot@example.com",
            "to": ["me@example.com", "you@example.com"], "username": "bot", "password": SMTP_PASSWORD}]
    with NotifyHub(cfg, session=SESSION) as hub:
        hub.emit("halted", {"reason": "drawdown 20 %"}, bar_ms=1_717_200_000_000)
        assert hub.flush(10)
        assert hub.stats()["email[0]"]["sent"] == 1
    assert smtp.auth == [("bot", SMTP_PASSWORD)]
    (mail,) = smtp.mails
    assert mail["rcpt"] == ["<me@example.com>", "<you@example.com>"]
    (msg,) = smtp.messages()
    assert msg["Subject"] == f"[spotgym {SESSION}] halted" and msg["From"] == "bot@example.com"
    assert "drawdown 20 %" in msg.get_content()
    assert SMTP_PASSWORD not in mail["data"].decode()


def test_log_notifier(caplog):
    caplog.set_level(logging.INFO, logger="spotgym.live.alerts")
    with NotifyHub([{"kind": "log", "level": "warning"}], session=SESSION) as hub:  # default: info
        hub.emit("feed_stale", SAMPLES["feed_stale"], bar_ms=1_717_200_000_000)
        assert hub.flush(10)
    (rec,) = [r for r in caplog.records if r.name == "spotgym.live.alerts"]
    assert rec.levelno == logging.WARNING and "feed_stale" in rec.getMessage()
    assert rec.session == SESSION and rec.kind == "feed_stale" and rec.bar == 1_717_200_000_000


def test_events_filter(receiver):
    cfg = [{"kind": "webhook", "url": receiver.url + "/fills", "events": ["fill"]},
           {"kind": "webhook", "url": receiver.url + "/all", "events": ["*"]},
           {"kind": "webhook", "url": receiver.url + "/default"}]
    with NotifyHub(cfg, session=SESSION) as hub:
        hub.emit("fill", SAMPLES["fill"])
        hub.emit("feed_stale", SAMPLES["feed_stale"])
        hub.emit("backfill", {"bars": 3, "first_ms": 1})
        assert hub.flush(10)
    by_path: dict[str, list[str]] = {}
    for p in receiver.posts:
        by_path.setdefault(p["path"], []).append(p["json"]["kind"])
    assert by_path["/fills"] == ["fill"]
    assert sorted(by_path["/all"]) == ["backfill", "feed_stale", "fill"]
    assert sorted(by_path["/default"]) == ["feed_stale", "fill"]


def test_dedupe(receiver):
    with NotifyHub([{"kind": "webhook", "url": receiver.url, "dedupe_s": 60}], session=SESSION) as hub:
        for _ in range(3):
            hub.emit("feed_stale", SAMPLES["feed_stale"])
        # the broker's alert and the journal's row of one rejection: one message
        hub.emit("order_rejected", {"client_id": "sg-1", "error": "InsufficientFunds"})
        hub.emit("order_rejected", {"client_id": "sg-1", "note": "InsufficientFunds", "last_error": "x"})
        hub.emit("order_rejected", {"client_id": "sg-2", "error": "InsufficientFunds"})
        for i in range(3):  # distinct fills are all sent
            hub.emit("fill", {**SAMPLES["fill"], "trade_id": f"t{i}"})
        for _ in range(4):  # a halted account vetoes every bar: one veto message, one kill switch
            hub.emit("decision", {"risk": "halt", "halted": 1})
        assert hub.flush(10)
        stats = hub.stats()["webhook[0]"]
    assert sorted(receiver.kinds()) == sorted(["feed_stale", "order_rejected", "order_rejected", "fill", "fill",
                                               "fill", "kill_switch", "risk_veto"])
    assert stats["deduped"] == 2 + 1 + 2 and stats["sent"] == 8
    assert dedupe_key("session_ready", {}) is None


def test_dedupe_window_expires(receiver):
    clock = FakeClock()
    with NotifyHub([{"kind": "webhook", "url": receiver.url, "dedupe_s": 60}], session=SESSION, clock=clock) as hub:
        hub.emit("feed_stale", SAMPLES["feed_stale"])
        assert hub.flush(10)
        hub.emit("feed_stale", SAMPLES["feed_stale"])
        assert hub.flush(10)
        clock.t += 61
        hub.emit("feed_stale", SAMPLES["feed_stale"])
        assert hub.flush(10)
    assert receiver.kinds() == ["feed_stale", "feed_stale"]


def test_rate_limit_holds_back_and_sums_up(receiver):
    clock = FakeClock()
    cfg = [{"kind": "webhook", "url": receiver.url, "max_per_minute": 3}]
    hub = NotifyHub(cfg, session=SESSION, clock=clock)
    try:
        for i in range(10):
            hub.emit("fill", {**SAMPLES["fill"], "trade_id": f"t{i}"})
        hub.emit("halted", {"reason": "kill"})  # urgent: never held back
        assert hub.flush(10)
        time.sleep(0.3)  # the worker ticks: nothing more may go out within the minute
        assert receiver.kinds() == ["fill", "fill", "fill", "halted"]
        clock.t += 61  # the window frees: the held-back fills are summed up in one message
        deadline = time.monotonic() + 5
        while len(receiver.posts) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.kinds()[4] == "suppressed"
        summary = receiver.posts[4]["json"]
        assert summary["payload"] == {"count": 7, "kinds": {"fill": 7}} and "7 more alert(s)" in summary["text"]
        assert hub.stats()["webhook[0]"]["suppressed"] == 7
    finally:
        hub.close(5)


def test_min_interval_and_summary_at_close(receiver):
    clock = FakeClock()
    hub = NotifyHub([{"kind": "webhook", "url": receiver.url, "min_interval_s": 30}], session=SESSION, clock=clock)
    hub.emit("feed_stale", SAMPLES["feed_stale"])
    hub.emit("feed_recovered", SAMPLES["feed_recovered"])
    hub.emit("fill", SAMPLES["fill"])
    assert hub.flush(10)
    assert receiver.kinds() == ["feed_stale"]
    assert hub.close(5) == 0  # close sends what was held back, rate limit or not
    assert receiver.kinds() == ["feed_stale", "suppressed"]
    assert receiver.posts[1]["json"]["payload"]["kinds"] == {"feed_recovered": 1, "fill": 1}
    hub.emit("fill", SAMPLES["fill"])  # after close: ignored, never raises


# ------------------------------------------------------------------------------------------------- failures
def test_failing_receiver_is_retried_and_never_blocks(receiver):
    receiver.fail_next = 3
    receiver.delay = 0.03  # 23 requests: a caller waiting on them would wait > 0.6 s
    cfg = [{"kind": "webhook", "url": receiver.url, "retry_s": 0.05, "max_tries": 5, "max_per_minute": 0}]
    with NotifyHub(cfg, session=SESSION) as hub:
        started = time.perf_counter()
        for i in range(20):
            hub.emit("fill", {**SAMPLES["fill"], "trade_id": f"t{i}"})
        elapsed = time.perf_counter() - started
        assert elapsed < 0.2, f"emit blocked for {elapsed:.3f} s"
        assert hub.flush(20)
        stats = hub.stats()["webhook[0]"]
    assert sorted(p["json"]["payload"]["trade_id"] for p in receiver.posts) == sorted(f"t{i}" for i in range(20))
    assert stats == {"sent": 20, "failed": 3, "dropped": 0, "deduped": 0, "suppressed": 0}
    assert receiver.attempts == 23


def test_dead_receiver_dropped_after_max_tries(caplog):
    caplog.set_level(logging.INFO, logger="spotgym.live.notify")
    url = dead_url()
    with NotifyHub([{"kind": "webhook", "url": url, "max_tries": 3, "retry_s": 0.01}], session=SESSION) as hub:
        started = time.perf_counter()
        hub.emit("halted", {"reason": "kill"})
        hub.emit("feed_stale", SAMPLES["feed_stale"])
        assert time.perf_counter() - started < 0.2
        assert hub.flush(10)
        assert hub.stats()["webhook[0]"]["dropped"] == 2 and hub.stats()["webhook[0]"]["failed"] == 6
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 2 and all("after 3 tries" in d and "webhook[0]" in d for d in drops)
    assert all(r.levelno == logging.WARNING for r in caplog.records if "dropped" in r.getMessage())
    assert not any(url in r.getMessage() or "127.0.0.1" in r.getMessage() for r in caplog.records)


def test_client_error_is_dropped_at_once(receiver, caplog):
    receiver.fail_next, receiver.fail_status = 1, 400
    with NotifyHub([{"kind": "webhook", "url": receiver.url, "retry_s": 0.01}], session=SESSION) as hub:
        hub.emit("halted", {"reason": "kill"})
        assert hub.flush(10)
        assert hub.stats()["webhook[0]"]["dropped"] == 1
    assert receiver.attempts == 1 and any("after 1 try" in r.getMessage() for r in caplog.records)


def test_close_drops_what_it_cannot_deliver(caplog):
    with NotifyHub([{"kind": "webhook", "url": dead_url(), "retry_s": 30}], session=SESSION) as hub:
        hub.emit("halted", {"reason": "kill"})
        time.sleep(0.2)
        started = time.perf_counter()
        assert hub.close(0.3) == 1
        assert time.perf_counter() - started < 2
    assert any("undelivered" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------- secrets
def test_no_secret_in_any_message_or_log_line(receiver, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    hook_url = receiver.url + "/hooks/T0/B0/hook-url-secret-part"
    cfg = [{"kind": "webhook", "url": hook_url, "headers": {"Authorization": HOOK_SECRET}, "retry_s": 0.01},
           {"kind": "telegram", "token": TG_TOKEN, "chat_id": 5, "base_url": receiver.url, "retry_s": 0.01},
           {"kind": "email", "host": "127.0.0.1", "port": smtp.port, "sender": "bot@example.com", "to": "me@x.org",
            "username": "bot", "password": SMTP_PASSWORD},
           {"kind": "log"},
           {"kind": "telegram", "token": TG_TOKEN, "chat_id": 6, "base_url": dead_url(), "max_tries": 2,
            "retry_s": 0.01}]
    receiver.fail_next = 2  # failures, retries and drops all write log lines
    leaky = {  # what a careless exception text could carry
        "error": f"POST https://api.binance.com/api/v3/order?apiKey={API_KEY}&signature=abcdef0123 "
                 f"X-MBX-APIKEY: {API_KEY} secret={API_SECRET} quoted={quote(API_SECRET, safe='')} "
                 f"plus={quote_plus(API_SECRET)} token={TG_TOKEN} pw={SMTP_PASSWORD} auth={HOOK_SECRET}",
        "nested": {"list": [API_KEY, {"k": API_SECRET}], API_KEY: "as a key"},
        "client_id": "sg-abc-9",
    }
    with NotifyHub(cfg, session=SESSION, secrets=[API_KEY, API_SECRET]) as hub:
        hub.emit("order_rejected", leaky, bar_ms=1_717_200_000_000)
        hub.emit("halted", {"reason": f"banned: {API_SECRET}"})
        assert hub.flush(15)
        stats = hub.stats()
    assert stats["webhook[0]"]["sent"] == 2 and stats["telegram[1]"]["sent"] == 2 and stats["email[2]"]["sent"] == 2
    assert stats["telegram[4]"]["dropped"] == 2
    sent = [p["raw"] for p in receiver.posts] + [m["data"].decode() for m in smtp.mails]
    logged = [caplog.text] + [r.getMessage() for r in caplog.records]
    secrets = [API_KEY, API_SECRET, quote(API_SECRET, safe=""), quote_plus(API_SECRET), TG_TOKEN, SMTP_PASSWORD,
               HOOK_SECRET, "hook-url-secret-part", "abcdef0123"]
    for text in sent + logged:
        for secret in secrets:
            assert secret not in text
    assert all("***" in text for text in sent)
    tg = [p for p in receiver.posts if "/bot" in p["path"]]
    assert tg and all(p["json"]["chat_id"] == 5 for p in tg)  # the token still reached the right URL


# ------------------------------------------------------------------------------------------------- daily summary
def test_daily_tracker_and_track_day(receiver):
    day_ms = 86_400_000
    t0 = 19_875 * day_ms  # 2024-06-01 00:00 UTC
    tracker = DailyTracker()
    assert tracker.update(t0, equity=100.0, trades=0, fees=0.0) is None
    assert tracker.update(t0 + 3_600_000, equity=120.0, trades=2, fees=1.0) is None
    assert tracker.update(t0 + 7_200_000, equity=90.0, trades=3, fees=1.5) is None
    s = tracker.update(t0 + day_ms, equity=95.0, trades=3, fees=1.5)
    assert s == {"day": "2024-06-01", "pnl": -10.0, "return": -0.1, "drawdown": pytest.approx(0.25), "trades": 3,
                 "fees": 1.5, "equity": 90.0}
    s2 = tracker.update(t0 + 2 * day_ms, equity=96.0, trades=5, fees=2.0)
    assert s2["day"] == "2024-06-02" and s2["pnl"] == 5.0 and s2["trades"] == 0 and s2["fees"] == 0.0

    with NotifyHub([{"kind": "webhook", "url": receiver.url}], session=SESSION) as hub:
        for i in range(30):  # 30 hourly bars: one day boundary
            hub.track_day(t0 + i * 3_600_000, equity=100.0 + i, trades=i, fees=0.1 * i)
        assert hub.flush(10)
    (post,) = receiver.posts
    assert post["json"]["kind"] == "daily_summary" and post["json"]["payload"]["day"] == "2024-06-01"
    assert post["json"]["payload"]["pnl"] == 23.0 and post["json"]["payload"]["trades"] == 23


def test_no_notifiers_is_a_no_op():
    hub = NotifyHub(None, session=SESSION)
    hub.emit("fill", SAMPLES["fill"])
    assert hub.flush(1) and hub.close(1) == 0


def test_secrets_added_once_connected(receiver):
    from spotgym.live.keys import Credentials

    creds = Credentials(api_key=API_KEY, secret=API_SECRET, exchange="binance", network="testnet")
    with NotifyHub([{"kind": "webhook", "url": receiver.url}], session=SESSION) as hub:
        hub.add_secrets([creds])
        hub.emit("ban", {"error": f"key {API_KEY} secret {API_SECRET}"})
        assert hub.flush(10)
    (post,) = receiver.posts
    assert API_KEY not in post["raw"] and API_SECRET not in post["raw"] and "key *** secret ***" in post["raw"]
