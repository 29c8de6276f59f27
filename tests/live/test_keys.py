"""API keys: the encrypted keystore, keys from the environment, vetting a key against the replay exchange's
apiRestrictions, keeping keys out of logs (ccxt at DEBUG), and ``spotgym keys add | list | remove``."""

from __future__ import annotations

import argparse
import io
import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from spotgym.live import keys as keys_mod
from spotgym.live.keys import (
    Credentials,
    KeyRefused,
    Keystore,
    KeyStoreError,
    SecretRedactor,
    add_keys_commands,
    credentials_from_env,
    default_keystore_path,
    install_redaction,
    redact,
    resolve_credentials,
    scrub_exception,
    vet_key,
)
from spotgym.sim import create_app, serve_in_thread
from spotgym.venue import make_exchange

N = 2**12  # scrypt cost for tests (the default 2**15 is ~8x slower)
API_KEY = "Kq7vTradeOnlyApiKey0123456789abcdefABCDEF"
SECRET = "Zs9SecretValue/with+odd=chars_0123456789xyz"
PASS = "correct horse battery staple"
WD_KEY, WD_SECRET = "Wd1WithdrawingApiKey0123456789", "Wd2WithdrawingSecret0123456789"
ENV_VARS = [f"SPOTGYM_{n}API_{k}" for n in ("", "LIVE_", "TESTNET_", "DEMO_") for k in ("KEY", "SECRET")] + [
    "SPOTGYM_KEYSTORE_PASSPHRASE", "SPOTGYM_KEYS_ADD_API_KEY", "SPOTGYM_KEYS_ADD_SECRET"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No key of the developer's environment leaks in; the default keystore lives under tmp_path."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def store(tmp_path) -> Keystore:
    return Keystore(tmp_path / "cfg" / "spotgym" / "keys.json", scrypt_n=N)


def bars(rows: int = 48) -> pd.DataFrame:
    ts = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000 + 3_600_000 * np.arange(rows)
    close = 2000 + np.arange(rows, dtype=float)
    return pd.DataFrame({"timestamp": ts, "open": close - 1, "high": close + 5, "low": close - 5, "close": close,
                         "volume": np.full(rows, 10.0)})


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """A replay exchange on loopback: a trade-only account (API_KEY) and one that can withdraw (WD_KEY)."""
    frame = bars()
    app = create_app({"ETH/USDT@1h": frame}, start_ms=int(frame["timestamp"].iat[10]), speed="manual",
                     api_key=API_KEY, api_secret=SECRET)
    with serve_in_thread(app) as url:
        reply = requests.post(url + "/sim/accounts", json={"api_key": WD_KEY, "api_secret": WD_SECRET,
                                                           "can_withdraw": True}, timeout=5)
        assert reply.status_code == 200, reply.text
        yield url


# ------------------------------------------------------------------------------------------------------ keystore
def test_round_trip_file_mode_and_no_plaintext(store):
    store.add("main", "binance", "live", API_KEY, SECRET, PASS)
    store.add("tn", "binance", "testnet", " tn-key-123456 \n", "tn-secret-123456", "another passphrase")
    creds = store.get("main", PASS)
    assert (creds.exchange, creds.network, creds.api_key, creds.secret) == ("binance", "live", API_KEY, SECRET)
    assert creds.source == "keystore:main"
    assert store.get("tn", "another passphrase").api_key == "tn-key-123456"  # pasted whitespace stripped
    assert store.names() == [{"name": "main", "exchange": "binance", "network": "live"},
                             {"name": "tn", "exchange": "binance", "network": "testnet"}]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.parent.parent.stat().st_mode) == 0o700  # created missing parents too
    text = store.path.read_text()
    for clear in (API_KEY, SECRET, PASS, "tn-key-123456", "tn-secret-123456"):
        assert clear not in text
    entry = json.loads(text)["keys"][0]
    assert {"name", "exchange", "network", "kdf", "salt", "nonce", "ciphertext"} <= set(entry)
    assert entry["kdf"] == {"name": "scrypt", "n": N, "r": 8, "p": 1, "length": 64}
    assert [p.name for p in store.path.parent.iterdir()] == ["keys.json"]  # no temporary file left
    store.remove("tn")
    assert [e["name"] for e in store.names()] == ["main"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_wrong_passphrase(store):
    store.add("main", "binance", "live", API_KEY, SECRET, PASS)
    with pytest.raises(KeyStoreError) as err:
        store.get("main", PASS + "!")
    assert str(err.value) == "wrong passphrase for key 'main'"
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


def _edit(store: Keystore, change) -> None:
    doc = json.loads(store.path.read_text())
    change(doc["keys"][0])
    store.path.write_text(json.dumps(doc))


def test_tampered_entries_are_rejected(store):
    store.add("main", "binance", "live", API_KEY, SECRET, PASS)
    original = store.path.read_text()

    def flip(entry):
        raw = bytearray(keys_mod.base64.b64decode(entry["ciphertext"]))
        raw[3] ^= 0x01
        entry["ciphertext"] = keys_mod.base64.b64encode(bytes(raw)).decode()

    _edit(store, flip)
    with pytest.raises(KeyStoreError, match="fails authentication: the file was altered") as err:
        store.get("main", PASS)
    assert err.value.__suppress_context__  # no cryptography InvalidTag chained into the traceback
    # the labels are authenticated: a key moved to another network (or renamed) no longer decrypts
    for change in (lambda e: e.update(network="testnet"), lambda e: e.update(name="other")):
        store.path.write_text(original)
        _edit(store, change)
        name = json.loads(store.path.read_text())["keys"][0]["name"]
        with pytest.raises(KeyStoreError, match="fails authentication"):
            store.get(name, PASS)
    store.path.write_text(original)
    _edit(store, lambda e: e.update(nonce="not base64!"))
    with pytest.raises(KeyStoreError, match="is corrupt: nonce is not base64"):
        store.get("main", PASS)
    store.path.write_text(original)
    _edit(store, lambda e: e["kdf"].update(n=2**30))  # a hostile cost is refused, not attempted
    with pytest.raises(KeyStoreError, match="scrypt parameters out of range"):
        store.get("main", PASS)


def test_keystore_errors(store, tmp_path):
    with pytest.raises(KeyStoreError, match=r"no keystore at .*keys\.json: add a key with 'spotgym keys add NAME'"):
        store.get("main", PASS)
    with pytest.raises(KeyStoreError, match="no keystore"):
        store.names()
    store.add("main", "binance", "live", API_KEY, SECRET, PASS)
    with pytest.raises(KeyStoreError, match=r"no key 'other' in .* \(keys: main\)"):
        store.get("other", PASS)
    with pytest.raises(KeyStoreError, match="no key 'other'"):
        store.remove("other")
    with pytest.raises(KeyStoreError, match="exists already"):
        store.add("main", "binance", "live", "k" * 10, "s" * 10, PASS)
    store.add("main", "binance", "demo", "k" * 10, "s" * 10, PASS, overwrite=True)
    assert store.get("main", PASS).network == "demo"
    for bad, match in [(dict(name="no spaces"), "key name"), (dict(network="paper"), "unknown network"),
                       (dict(passphrase="short"), "at least 8"), (dict(secret="  "), "secret is empty")]:
        kwargs = dict(name="x", exchange="binance", network="live", api_key="k" * 10, secret="s" * 10,
                      passphrase=PASS) | bad
        with pytest.raises(KeyStoreError, match=match):
            store.add(**kwargs)
    store.path.write_text("{not json")
    with pytest.raises(KeyStoreError, match="is corrupt: not JSON"):
        store.names()
    with pytest.raises(KeyStoreError, match="is corrupt"):  # a corrupt store is never overwritten by add
        store.add("y", "binance", "live", "k" * 10, "s" * 10, PASS)
    store.path.write_text(json.dumps({"format": "spotgym-keystore", "version": 9, "keys": []}))
    with pytest.raises(KeyStoreError, match="version 9"):
        store.names()
    with pytest.raises(KeyStoreError, match="cannot read keystore"):
        Keystore(tmp_path, scrypt_n=N).names()  # a directory


def test_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "x"))
    assert default_keystore_path() == tmp_path / "x" / "spotgym" / "keys.json"
    assert Keystore().path == tmp_path / "x" / "spotgym" / "keys.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert default_keystore_path() == Path.home() / ".config" / "spotgym" / "keys.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_keystore_path() == Path.home() / ".config" / "spotgym" / "keys.json"


def test_repr_hides_secrets():
    creds = Credentials("binance", "testnet", API_KEY, SECRET, source="keystore:main")
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds]), repr({"c": creds})):
        assert API_KEY not in text and SECRET not in text
        assert API_KEY[-4:] not in text and SECRET[-4:] not in text
    assert repr(creds) == "Credentials(exchange='binance', network='testnet', source='keystore:main')"
    assert "binance testnet" in str(creds)
    assert creds.exchange_kwargs() == {"api_key": API_KEY, "secret": SECRET}
    with pytest.raises(KeyStoreError, match="unknown network"):
        Credentials("binance", "paper", API_KEY, SECRET)
    with pytest.raises(KeyStoreError, match="empty"):
        Credentials("binance", "live", "", SECRET)


# --------------------------------------------------------------------------------------------- environment, resolve
def test_credentials_from_env(monkeypatch):
    assert credentials_from_env("testnet") is None
    monkeypatch.setenv("SPOTGYM_API_KEY", "generic-key-1234")
    monkeypatch.setenv("SPOTGYM_API_SECRET", "generic-secret-1234")
    fallback = credentials_from_env("live")
    assert (fallback.api_key, fallback.network, fallback.source) == ("generic-key-1234", "live", "env:SPOTGYM_API_KEY")
    monkeypatch.setenv("SPOTGYM_TESTNET_API_KEY", "tn-key-1234")
    monkeypatch.setenv("SPOTGYM_TESTNET_API_SECRET", "tn-secret-1234")
    own = credentials_from_env("testnet")
    assert (own.api_key, own.secret, own.network) == ("tn-key-1234", "tn-secret-1234", "testnet")
    assert credentials_from_env("demo").api_key == "generic-key-1234"  # the fallback serves every network
    monkeypatch.delenv("SPOTGYM_TESTNET_API_SECRET")
    with pytest.raises(KeyStoreError) as err:
        credentials_from_env("testnet")
    assert "SPOTGYM_TESTNET_API_SECRET" in str(err.value) and "SPOTGYM_TESTNET_API_KEY is set" in str(err.value)
    assert "tn-key-1234" not in str(err.value)
    monkeypatch.delenv("SPOTGYM_API_KEY")
    with pytest.raises(KeyStoreError, match="SPOTGYM_API_SECRET is set but SPOTGYM_API_KEY is not") as err:
        credentials_from_env("live")
    assert "generic-secret-1234" not in str(err.value)
    with pytest.raises(KeyStoreError, match="unknown network"):
        credentials_from_env("paper")


def test_resolve_credentials(monkeypatch, store):
    with pytest.raises(KeyStoreError) as err:
        resolve_credentials("testnet")
    assert "spotgym keys add NAME --testnet" in str(err.value) and "SPOTGYM_TESTNET_API_KEY" in str(err.value)
    monkeypatch.setenv("SPOTGYM_DEMO_API_KEY", "demo-key-1234")
    monkeypatch.setenv("SPOTGYM_DEMO_API_SECRET", "demo-secret-1234")
    assert resolve_credentials("demo").api_key == "demo-key-1234"
    store.add("tn", "binance", "testnet", API_KEY, SECRET, PASS)
    assert resolve_credentials("testnet", key_name="tn", keystore=store, passphrase=PASS).secret == SECRET
    assert resolve_credentials("testnet", key_name="tn", keystore=str(store.path), passphrase=PASS).secret == SECRET
    monkeypatch.setenv("SPOTGYM_KEYSTORE_PASSPHRASE", PASS)
    assert resolve_credentials("testnet", key_name="tn", keystore=store).api_key == API_KEY
    with pytest.raises(KeyStoreError, match="key 'tn' is a binance testnet key, not binance live"):
        resolve_credentials("live", key_name="tn", keystore=store)
    monkeypatch.delenv("SPOTGYM_KEYSTORE_PASSPHRASE")
    monkeypatch.setattr(keys_mod.sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(keys_mod.getpass, "getpass", lambda prompt="": PASS)
    assert resolve_credentials("testnet", key_name="tn", keystore=store).api_key == API_KEY
    monkeypatch.setattr(keys_mod.getpass, "getpass", lambda prompt="": "wrong passphrase")
    with pytest.raises(KeyStoreError, match="wrong passphrase for key 'tn'"):
        resolve_credentials("testnet", key_name="tn", keystore=store)


# ----------------------------------------------------------------------------------------------------------- vetting
def test_vet_key_against_the_sim(sim_url):
    trade_only = make_exchange(mode="sim", sim_url=sim_url, api_key=API_KEY, secret=SECRET)
    assert trade_only.urls["api"]["sapi"].startswith(sim_url)  # make_exchange re-hosts /sapi too
    warnings = vet_key(trade_only, "live")
    assert len(warnings) == 1 and "no IP restriction" in warnings[0] and "30 days" in warnings[0]

    withdrawing = make_exchange(mode="sim", sim_url=sim_url, api_key=WD_KEY, secret=WD_SECRET)
    with pytest.raises(KeyRefused, match="can withdraw funds: create a trade-only key") as err:
        vet_key(withdrawing, "live")
    assert WD_KEY not in str(err.value) and WD_SECRET not in str(err.value)
    warnings = vet_key(withdrawing, "demo")
    assert any("can withdraw funds" in w for w in warnings) and any("no IP restriction" in w for w in warnings)

    forged = make_exchange(mode="sim", sim_url=sim_url, api_key=API_KEY, secret="not-the-secret-0000")
    with pytest.raises(KeyRefused, match="the exchange rejected the live API key: AuthenticationError") as err:
        vet_key(forged, "live")
    assert API_KEY not in str(err.value) and "not-the-secret-0000" not in str(err.value)
    assert err.value.__suppress_context__


def test_vet_key_testnet_is_not_called_and_failures_are_scrubbed(sim_url):
    class NoSapi:
        def sapi_get_account_apirestrictions(self):
            raise AssertionError("the spot testnet has no /sapi: vet_key must not call it")

    warnings = vet_key(NoSapi(), "testnet")
    assert len(warnings) == 1 and "testnet" in warnings[0] and "cannot be vetted" in warnings[0]

    demo = make_exchange(mode="demo", api_key=API_KEY, secret=SECRET)  # ccxt's demo table has no sapi: no request
    assert any("cannot be vetted" in w for w in vet_key(demo, "demo"))

    with serve_in_thread(create_app({"ETH/USDT@1h": bars()}, speed="manual")) as url:
        dead = url  # the server is gone once the block ends: connection refused on loopback
    gone = make_exchange(mode="sim", sim_url=dead, api_key=API_KEY, secret=SECRET)
    with pytest.raises(KeyStoreError, match="could not vet the live API key: NetworkError: binance GET") as err:
        vet_key(gone, "live")  # ccxt's message carries the signed URL
    assert not isinstance(err.value, KeyRefused) and err.value.__suppress_context__
    message = str(err.value)
    assert API_KEY not in message and SECRET not in message
    assert "signature=***" in message and "signature=" not in message.replace("signature=***", "")


# --------------------------------------------------------------------------------------------------------- redaction
def test_redact_and_scrub_exception():
    text = (f"GET https://api.binance.com/sapi/v1/x?timestamp=1&signature=9f86d081884c7d65&recvWindow=5, "
            f"Request: {{'X-MBX-APIKEY': 'someOtherKey123', 'secret': '{SECRET}'}} body apiKey={API_KEY} "
            f"encoded={requests.utils.quote(SECRET, safe='')} X-MBX-APIKEY: headerKey456 "
            f'{{"signature": "abcdef0123", "apiKey": "{API_KEY}"}}')
    out = redact(text, [API_KEY, SECRET, None, "ab"])
    for leaked in (API_KEY, SECRET, "9f86d081884c7d65", "someOtherKey123", "headerKey456", "abcdef0123",
                   requests.utils.quote(SECRET, safe="")):
        assert leaked not in out
    assert "signature=***&recvWindow=5" in out and "'X-MBX-APIKEY': '***'" in out and "X-MBX-APIKEY: ***" in out
    assert redact("Signature for this request is not valid.", []) == "Signature for this request is not valid."
    creds = Credentials("binance", "live", API_KEY, SECRET)
    assert redact(f"{API_KEY}/{SECRET}", creds) == "***/***"
    assert scrub_exception(RuntimeError(f"binance GET /x?signature=ff00 key {API_KEY}"), creds) == \
        "RuntimeError: binance GET /x?signature=*** key ***"
    assert scrub_exception(TimeoutError(), creds) == "TimeoutError"


def test_secret_redactor_on_root_handlers():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    redactor = install_redaction(Credentials("binance", "live", API_KEY, SECRET))
    try:
        assert isinstance(redactor, SecretRedactor) and redactor in handler.filters
        other = logging.getLogger("spotgym.test_keys")
        other.warning("loaded key %s with secret %s", API_KEY, SECRET)
        try:
            raise ValueError(f"request failed: ?signature=abc123def&apiKey={API_KEY}")
        except ValueError:
            other.exception("boom %s", {"secret": SECRET})
        again = install_redaction(["LaterSecret9876"])  # the same redactor, one more secret
        assert again is redactor
        other.warning("and LaterSecret9876")
    finally:
        redactor.uninstall()
        root.removeHandler(handler)
    out = stream.getvalue()
    assert API_KEY not in out and SECRET not in out and "abc123def" not in out and "LaterSecret9876" not in out
    assert "loaded key *** with secret ***" in out and "ValueError: request failed" in out and "and ***" in out
    assert redactor not in handler.filters and redactor not in logging.getLogger("ccxt.base.exchange").filters


def test_ccxt_debug_log_of_a_signed_request_is_redacted(sim_url, caplog):
    ccxt_logger = logging.getLogger("ccxt.base.exchange")
    saved = {name: logging.getLogger(name).level for name in ("ccxt", "ccxt.base.exchange")}
    creds = Credentials("binance", "live", API_KEY, SECRET)
    redactor = install_redaction(creds)
    try:
        assert ccxt_logger.getEffectiveLevel() >= logging.INFO and logging.getLogger("ccxt").level >= logging.INFO
        caplog.set_level(logging.DEBUG, logger="ccxt.base.exchange")  # as if someone turned DEBUG back on
        caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
        client = make_exchange(mode="sim", sim_url=sim_url, **creds.exchange_kwargs())
        assert client.sapi_get_account_apirestrictions()["enableSpotAndMarginTrading"] is True
        client.fetch_balance()
    finally:
        redactor.uninstall()
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    signed = [r for r in caplog.records if r.name == "ccxt.base.exchange" and "apiRestrictions" in r.getMessage()]
    assert signed, "ccxt logged no request at DEBUG"
    assert any("signature=***" in r.getMessage() and "'X-MBX-APIKEY': '***'" in r.getMessage() for r in signed)
    assert any(r.name == "urllib3.connectionpool" and "signature=***" in r.getMessage() for r in caplog.records)
    texts = [caplog.text] + [r.getMessage() for r in caplog.records]
    for text in texts:
        assert API_KEY not in text and SECRET not in text
        assert "signature=" not in text.replace("signature=***", "")


# --------------------------------------------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="spotgym")
    sub = top.add_subparsers(dest="command", required=True)
    add_keys_commands(sub)
    return top


def run_cli(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args) or 0)


def test_keys_commands(monkeypatch, capsys, tmp_path):
    path = tmp_path / "k" / "keys.json"
    monkeypatch.setenv("SPOTGYM_KEYS_ADD_API_KEY", API_KEY)
    monkeypatch.setenv("SPOTGYM_KEYS_ADD_SECRET", SECRET)
    monkeypatch.setenv("SPOTGYM_KEYSTORE_PASSPHRASE", PASS)
    monkeypatch.setattr(keys_mod.getpass, "getpass", lambda prompt="": pytest.fail(f"prompted: {prompt}"))
    assert run_cli(["keys", "add", "tn1", "--testnet", "--keystore", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"key tn1 (binance, testnet) saved to {path}"
    assert API_KEY not in out.out + out.err and SECRET not in out.out + out.err

    assert run_cli(["keys", "list", "--keystore", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "tn1" in listing and "testnet" in listing and "binance" in listing
    assert API_KEY not in listing and SECRET not in listing
    text = path.read_text()
    assert API_KEY not in text and SECRET not in text and PASS not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keystore(path).get("tn1", PASS).secret == SECRET
    assert resolve_credentials("testnet", key_name="tn1", keystore=path).api_key == API_KEY

    assert run_cli(["keys", "add", "tn1", "--demo", "--keystore", str(path)]) == 2  # exists: one error line
    err = capsys.readouterr().err
    assert err.startswith("error: key 'tn1' exists already") and err.count("\n") == 1
    assert run_cli(["keys", "add", "d1", "--exchange", "nosuchexchange", "--keystore", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: unknown exchange 'nosuchexchange'")
    assert run_cli(["keys", "remove", "nope", "--keystore", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: no key 'nope'")
    assert run_cli(["keys", "remove", "tn1", "--keystore", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"key tn1 removed from {path}"
    assert run_cli(["keys", "list", "--keystore", str(path)]) == 0
    assert "no keys in" in capsys.readouterr().out
    assert run_cli(["keys", "list", "--keystore", str(tmp_path / "none.json")]) == 0
    assert "no keystore at" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser().parse_args(["keys", "add", "x", "--testnet", "--demo"])
    capsys.readouterr()


def test_keys_add_prompts_without_echo(monkeypatch, capsys, tmp_path):
    """No env vars: key, secret and passphrase (twice) come from getpass; a mismatch is an error."""
    path = tmp_path / "keys.json"
    answers = iter([API_KEY, SECRET, PASS, PASS + "typo"])
    prompts = []

    def fake_getpass(prompt=""):
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(keys_mod.getpass, "getpass", fake_getpass)
    assert run_cli(["keys", "add", "main", "--keystore", str(path)]) == 2
    assert capsys.readouterr().err.strip() == "error: the passphrases do not match"
    assert len(prompts) == 4 and not path.exists()
    answers = iter([API_KEY, SECRET, PASS, PASS])
    assert run_cli(["keys", "add", "main", "--keystore", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"key main (binance, live) saved to {path}"
    assert API_KEY not in out.out + out.err and SECRET not in out.out + out.err
    assert Keystore(path).get("main", PASS).api_key == API_KEY
