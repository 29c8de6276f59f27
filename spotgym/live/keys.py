"""API keys for live trading: where they come from, whether they are safe to trade with, and keeping them out of logs.

- ``Credentials``: an exchange API key and secret for one network (``live``, ``testnet`` or ``demo``); its
  ``repr`` / ``str`` never show either.
- ``Keystore``: an encrypted file of named keys (default ``$XDG_CONFIG_HOME/spotgym/keys.json``, else
  ``~/.config/spotgym/keys.json``), mode 0600 in a 0700 directory, rewritten atomically. Each key is encrypted with
  its own passphrase: scrypt (memory-hard) derives 64 bytes from it and a random salt; the first 32 are an
  AES-256-GCM key, the rest a passphrase check (so a wrong passphrase is told apart from an altered file). The
  entry's name, exchange and network are authenticated as associated data: an entry renamed or moved to another
  network in the file no longer decrypts.
- ``credentials_from_env`` / ``resolve_credentials``: a key from the keystore (``key_name``) or from
  ``SPOTGYM_<NETWORK>_API_KEY`` / ``SPOTGYM_<NETWORK>_API_SECRET``.
- ``vet_key``: asks Binance what the key may do (``GET /sapi/v1/account/apiRestrictions``) and refuses a key that
  can withdraw funds (live) or cannot trade spot; a missing IP restriction is a warning.
- ``redact``, ``SecretRedactor``, ``install_redaction``, ``scrub_exception``: keys, secrets, request signatures
  and the ``X-MBX-APIKEY`` header replaced by ``***`` in log records and exception messages (ccxt logs every
  request's signed URL and headers at DEBUG on ``ccxt.base.exchange``).
- ``add_keys_commands``: ``spotgym keys add | list | remove``.

Every failure here is a ``KeyStoreError`` (a ``ValueError``: the CLI prints it as one ``error:`` line) whose
message names what is wrong and never contains a key, a secret or a passphrase; ``KeyRefused`` (a subclass) means
the exchange says the key must not be used.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import logging
import os
import re
import secrets as _random
import stat
import sys
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from spotgym.core.private import config_path, write_private_json

__all__ = [
    "NETWORKS",
    "PASSPHRASE_ENV",
    "SCRYPT_N",
    "Credentials",
    "KeyRefused",
    "KeyStoreError",
    "Keystore",
    "SecretRedactor",
    "add_keys_commands",
    "credentials_from_env",
    "default_keystore_path",
    "env_var_names",
    "install_redaction",
    "redact",
    "resolve_credentials",
    "scrub_exception",
    "vet_key",
]

log = logging.getLogger(__name__)

NETWORKS: tuple[str, ...] = ("live", "testnet", "demo")
PASSPHRASE_ENV = "SPOTGYM_KEYSTORE_PASSPHRASE"
ADD_API_KEY_ENV = "SPOTGYM_KEYS_ADD_API_KEY"
ADD_SECRET_ENV = "SPOTGYM_KEYS_ADD_SECRET"

SCRYPT_N = 2**15  # 32 MiB with r=8: about 0.1 s per derivation
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSPHRASE = 8
_DERIVED = 64  # 32 bytes of AES-256 key + 32 bytes of passphrase check
_FORMAT = "spotgym-keystore"
_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_EXCHANGE = re.compile(r"[a-z0-9_]{1,40}")


class KeyStoreError(ValueError):
    """A key cannot be stored, found, decrypted or used; the message is safe to print and to log."""


class KeyRefused(KeyStoreError):
    """The exchange reports that the key is unsafe or unfit to trade with (it can withdraw, cannot trade spot,
    or was rejected outright)."""


# ---------------------------------------------------------------------------------------------------- credentials
@dataclass(frozen=True, repr=False)
class Credentials:
    """An API key and its secret for ``exchange`` on ``network`` (``live``, ``testnet`` or ``demo``).

    ``source`` says where they came from (``keystore:NAME`` or ``env:VAR``). Neither ``repr`` nor ``str`` shows
    the key or the secret."""

    exchange: str
    network: str
    api_key: str
    secret: str
    source: str = ""

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise KeyStoreError(f"unknown network {self.network!r}: expected one of {', '.join(NETWORKS)}")
        if not isinstance(self.exchange, str) or not self.exchange:
            raise KeyStoreError("credentials need an exchange id, e.g. 'binance'")
        for field, value in (("API key", self.api_key), ("secret", self.secret)):
            if not isinstance(value, str) or not value.strip():
                raise KeyStoreError(f"credentials for {self.exchange} {self.network}: the {field} is empty")

    def __repr__(self) -> str:
        source = f", source={self.source!r}" if self.source else ""
        return f"Credentials(exchange={self.exchange!r}, network={self.network!r}{source})"

    def __str__(self) -> str:
        return f"{self.exchange} {self.network} API key" + (f" ({self.source})" if self.source else "")

    @property
    def secrets(self) -> tuple[str, str]:
        """``(api_key, secret)``: what ``redact`` must hide."""
        return self.api_key, self.secret

    def exchange_kwargs(self) -> dict[str, str]:
        """``api_key`` and ``secret`` as ``spotgym.venue.make_exchange`` takes them."""
        return {"api_key": self.api_key, "secret": self.secret}


def _check_network(network: str) -> str:
    if network not in NETWORKS:
        raise KeyStoreError(f"unknown network {network!r}: expected one of {', '.join(NETWORKS)}")
    return network


# ------------------------------------------------------------------------------------------------------ keystore
def default_keystore_path() -> Path:
    """``$XDG_CONFIG_HOME/spotgym/keys.json``, else ``~/.config/spotgym/keys.json``."""
    return config_path("keys.json")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError(f"{what} is not base64") from None


def _associated_data(name: str, exchange: str, network: str) -> bytes:
    return json.dumps({"format": _FORMAT, "version": _VERSION, "name": name, "exchange": exchange,
                       "network": network}, sort_keys=True, separators=(",", ":")).encode()


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return Scrypt(salt=salt, length=_DERIVED, n=n, r=r, p=p).derive(secret)


def _passphrase_check(derived: bytes) -> str:
    return hashlib.sha256(b"spotgym-keystore-check\0" + derived[32:]).hexdigest()


def _scrypt_params_ok(n: Any, r: Any, p: Any) -> bool:
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p))
    return ints and 2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16


@dataclass(frozen=True)
class _Entry:
    name: str
    exchange: str
    network: str
    n: int
    r: int
    p: int
    salt: bytes
    nonce: bytes
    check: str
    ciphertext: bytes


class Keystore:
    """Named API keys, each encrypted with a passphrase, in one JSON file.

    ``path`` defaults to ``default_keystore_path()``. ``scrypt_n`` is the scrypt cost of keys added from here on
    (a power of two, default ``2**15``; each entry records its own parameters, so a store may mix them). The file
    holds, per key: name, exchange, network, the KDF and its parameters, salt, nonce, a passphrase check and the
    AES-256-GCM ciphertext of the key and secret; nothing readable without the passphrase but the three labels.
    Writes go to a temporary file in the same directory (mode 0600) that then replaces the store
    (``os.replace``); directories it creates are mode 0700.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, scrypt_n: int = SCRYPT_N) -> None:
        if not _scrypt_params_ok(scrypt_n, SCRYPT_R, SCRYPT_P):
            raise KeyStoreError(f"scrypt_n must be a power of two from 2**10 to 2**20, got {scrypt_n!r}")
        self.path = Path(path).expanduser() if path is not None else default_keystore_path()
        self.scrypt_n = scrypt_n

    def __repr__(self) -> str:
        return f"Keystore({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.is_file()

    # ------------------------------------------------------------------ public
    def names(self) -> list[dict[str, str]]:
        """``[{"name", "exchange", "network"}, ...]`` sorted by name."""
        return [{"name": e["name"], "exchange": e["exchange"], "network": e["network"]} for e in self._load()]

    def add(self, name: str, exchange: str, network: str, api_key: str, secret: str, passphrase: str,
            overwrite: bool = False) -> None:
        """Encrypt ``api_key`` and ``secret`` with ``passphrase`` and store them as ``name``; an existing ``name`` is
        an error unless ``overwrite``."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise KeyStoreError(f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not first)")
        if not isinstance(exchange, str) or not _EXCHANGE.fullmatch(exchange):
            raise KeyStoreError(f"exchange {exchange!r}: a ccxt exchange id such as 'binance'")
        _check_network(network)
        api_key = api_key.strip() if isinstance(api_key, str) else ""
        secret = secret.strip() if isinstance(secret, str) else ""
        if not api_key or not secret:
            raise KeyStoreError(f"key '{name}': the {'API key' if not api_key else 'secret'} is empty")
        if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE:
            raise KeyStoreError(f"key '{name}': the passphrase needs at least {MIN_PASSPHRASE} characters")
        entries = self._load() if self.path.exists() else []
        if any(e["name"] == name for e in entries):
            if not overwrite:
                raise KeyStoreError(f"key '{name}' exists already in {self.path}: remove it first or overwrite it")
            entries = [e for e in entries if e["name"] != name]
        salt, nonce = _random.token_bytes(16), _random.token_bytes(12)
        n, r, p = self.scrypt_n, SCRYPT_R, SCRYPT_P
        derived = _derive(passphrase, salt, n, r, p)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        plain = json.dumps({"api_key": api_key, "secret": secret}).encode()
        ciphertext = AESGCM(derived[:32]).encrypt(nonce, plain, _associated_data(name, exchange, network))
        entries.append({
            "name": name, "exchange": exchange, "network": network,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kdf": {"name": "scrypt", "n": n, "r": r, "p": p, "length": _DERIVED},
            "cipher": "aes-256-gcm", "salt": _b64(salt), "nonce": _b64(nonce),
            "check": _passphrase_check(derived), "ciphertext": _b64(ciphertext),
        })
        self._save(entries)

    def get(self, name: str, passphrase: str) -> Credentials:
        """The decrypted key ``name``; ``KeyStoreError("wrong passphrase for key 'NAME'")`` on a wrong passphrase."""
        entry = self._entry(self._find(self._load(), name))
        try:
            derived = _derive(passphrase if isinstance(passphrase, str) else "", entry.salt, entry.n, entry.r,
                              entry.p)
        except (ValueError, MemoryError) as exc:
            raise KeyStoreError(f"key '{name}' in {self.path}: cannot derive its key ({type(exc).__name__})") from None
        if not hmac.compare_digest(_passphrase_check(derived), entry.check):
            raise KeyStoreError(f"wrong passphrase for key '{name}'")
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            plain = AESGCM(derived[:32]).decrypt(entry.nonce, entry.ciphertext,
                                                 _associated_data(entry.name, entry.exchange, entry.network))
        except InvalidTag:
            raise KeyStoreError(f"key '{name}' in {self.path} fails authentication: the file was altered or is "
                                f"corrupt") from None
        try:
            data = json.loads(plain)
            api_key, secret = data["api_key"], data["secret"]
        except (ValueError, TypeError, KeyError):
            raise KeyStoreError(f"key '{name}' in {self.path} is corrupt (its plaintext is not a key)") from None
        return Credentials(entry.exchange, entry.network, api_key, secret, source=f"keystore:{name}")

    def remove(self, name: str) -> None:
        entries = self._load()
        self._find(entries, name)
        self._save([e for e in entries if e["name"] != name])

    # ------------------------------------------------------------------ file
    def _corrupt(self, why: str) -> KeyStoreError:
        return KeyStoreError(f"keystore {self.path} is corrupt: {why}")

    def _load(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
            mode = stat.S_IMODE(self.path.stat().st_mode)
        except FileNotFoundError:
            raise KeyStoreError(f"no keystore at {self.path}: add a key with 'spotgym keys add NAME'") from None
        except OSError as exc:
            raise KeyStoreError(f"cannot read keystore {self.path}: {exc.strerror or type(exc).__name__}") from None
        if mode & 0o077:
            log.warning("keystore %s is accessible to other users (mode %03o): chmod 600 it", self.path, mode)
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._corrupt("not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise self._corrupt(f"not a {_FORMAT} file")
        if doc.get("version") != _VERSION:
            raise self._corrupt(f"version {doc.get('version')!r}, this spotgym reads version {_VERSION}")
        entries = doc.get("keys")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise self._corrupt("'keys' is not a list of entries")
        names = [e.get("name") for e in entries]
        for entry in entries:
            if not isinstance(entry.get("name"), str) or not _NAME.fullmatch(entry["name"]):
                raise self._corrupt(f"an entry has a bad name ({entry.get('name')!r})")
            if names.count(entry["name"]) > 1:
                raise self._corrupt(f"key '{entry['name']}' appears twice")
            if not isinstance(entry.get("exchange"), str) or entry.get("network") not in NETWORKS:
                raise self._corrupt(f"key '{entry['name']}' has a bad exchange or network")
        return sorted(entries, key=lambda e: e["name"])

    def _find(self, entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
        for entry in entries:
            if entry["name"] == name:
                return entry
        known = ", ".join(e["name"] for e in entries) or "none"
        raise KeyStoreError(f"no key '{name}' in {self.path} (keys: {known})")

    def _entry(self, raw: dict[str, Any]) -> _Entry:
        name = raw["name"]
        try:
            kdf = raw.get("kdf")
            if not isinstance(kdf, dict) or kdf.get("name") != "scrypt" or kdf.get("length") != _DERIVED:
                raise ValueError("kdf is not scrypt with a 64-byte output")
            if not _scrypt_params_ok(kdf.get("n"), kdf.get("r"), kdf.get("p")):
                raise ValueError("scrypt parameters out of range")
            if raw.get("cipher") != "aes-256-gcm":
                raise ValueError(f"cipher {raw.get('cipher')!r}")
            salt, nonce = _unb64(raw.get("salt"), "salt"), _unb64(raw.get("nonce"), "nonce")
            ciphertext = _unb64(raw.get("ciphertext"), "ciphertext")
            check = raw.get("check")
            if len(salt) < 16 or len(nonce) != 12 or len(ciphertext) <= 16:
                raise ValueError("salt, nonce or ciphertext has the wrong length")
            if not isinstance(check, str) or not re.fullmatch(r"[0-9a-f]{64}", check):
                raise ValueError("bad passphrase check")
        except ValueError as exc:
            raise KeyStoreError(f"key '{name}' in {self.path} is corrupt: {exc}") from None
        return _Entry(name, raw["exchange"], raw["network"], kdf["n"], kdf["r"], kdf["p"], salt, nonce, check,
                      ciphertext)

    def _save(self, entries: list[dict[str, Any]]) -> None:
        doc = {"format": _FORMAT, "version": _VERSION, "keys": sorted(entries, key=lambda e: e["name"])}
        try:
            write_private_json(self.path, doc, indent=2)
        except OSError as exc:
            raise KeyStoreError(f"cannot write keystore {self.path}: {exc.strerror or type(exc).__name__}") from None



# --------------------------------------------------------------------------------------------- environment, resolve
def env_var_names(network: str) -> tuple[str, str]:
    """``("SPOTGYM_<NETWORK>_API_KEY", "SPOTGYM_<NETWORK>_API_SECRET")``."""
    prefix = f"SPOTGYM_{_check_network(network).upper()}"
    return f"{prefix}_API_KEY", f"{prefix}_API_SECRET"


def credentials_from_env(network: str, exchange: str = "binance",
                         environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The key for ``network`` from ``SPOTGYM_<NETWORK>_API_KEY`` and ``SPOTGYM_<NETWORK>_API_SECRET`` (NETWORK is
    LIVE, TESTNET or DEMO), else from the unprefixed ``SPOTGYM_API_KEY`` and ``SPOTGYM_API_SECRET``, else ``None``.

    The unprefixed pair is a fallback for **every** network, live included: whoever sets it decides which network
    it is for, and the network's own pair always wins (the exchange rejects a key of another network). Empty
    variables count as unset; one variable of a pair without the other is a ``KeyStoreError`` naming the missing
    one (never the value of the other)."""
    env = os.environ if environ is None else environ
    for key_var, secret_var in (env_var_names(network), ("SPOTGYM_API_KEY", "SPOTGYM_API_SECRET")):
        api_key, secret = env.get(key_var, "").strip(), env.get(secret_var, "").strip()
        if api_key and secret:
            return Credentials(exchange, network, api_key, secret, source=f"env:{key_var}")
        if api_key or secret:
            present, missing = (key_var, secret_var) if api_key else (secret_var, key_var)
            raise KeyStoreError(f"{present} is set but {missing} is not: set both or neither")
    return None


def resolve_credentials(network: str, exchange: str = "binance", key_name: str | None = None,
                        keystore: Keystore | str | os.PathLike[str] | None = None,
                        passphrase: str | None = None) -> Credentials:
    """The key to trade ``exchange`` on ``network`` with.

    With ``key_name``: that keystore entry (``keystore`` is a ``Keystore``, a path or ``None`` for the default),
    decrypted with ``passphrase``, else ``$SPOTGYM_KEYSTORE_PASSPHRASE``, else a passphrase prompt (a terminal is
    needed); the entry must be for this exchange and network. Without: ``credentials_from_env``. Neither: a
    ``KeyStoreError`` that names both ways."""
    _check_network(network)
    if key_name is not None:
        store = keystore if isinstance(keystore, Keystore) else Keystore(keystore)
        if passphrase is None:
            passphrase = os.environ.get(PASSPHRASE_ENV) or None
        if passphrase is None:
            if not sys.stdin.isatty():
                raise KeyStoreError(f"key '{key_name}' needs its passphrase: set {PASSPHRASE_ENV} or run from a "
                                    f"terminal")
            try:
                passphrase = getpass.getpass(f"passphrase for key '{key_name}': ")
            except (EOFError, KeyboardInterrupt):
                raise KeyStoreError(f"no passphrase for key '{key_name}'") from None
        creds = store.get(key_name, passphrase)
        if (creds.exchange, creds.network) != (exchange, network):
            raise KeyStoreError(f"key '{key_name}' is a {creds.exchange} {creds.network} key, not {exchange} "
                                f"{network}")
        return creds
    creds = credentials_from_env(network, exchange)
    if creds is not None:
        return creds
    key_var, secret_var = env_var_names(network)
    raise KeyStoreError(f"no API key for {exchange} {network}: store one with 'spotgym keys add NAME"
                        f"{'' if network == 'live' else ' --' + network}' and pass its name, or set {key_var} and "
                        f"{secret_var}")


# ----------------------------------------------------------------------------------------------------------- vetting
TESTNET_UNVETTED = ("the spot testnet has no /sapi: the key's permissions (withdrawals, IP restriction) cannot be "
                    "vetted there; they are checked on live and demo")


def _client_secrets(client: Any) -> list[str]:
    return [v for v in (getattr(client, a, None) for a in ("apiKey", "secret", "password", "privateKey", "uid"))
            if isinstance(v, str) and v]


def vet_key(client: Any, network: str) -> list[str]:
    """Ask the exchange what ``client``'s key may do (``GET /sapi/v1/account/apiRestrictions``, weight 1) and
    return warnings; raise ``KeyRefused`` for a key that must not be used.

    ``client`` is a sync ccxt binance client with the key set; ``network`` is ``live``, ``testnet``, ``demo`` or
    ``sim`` (the replay exchange, which emulates the endpoint; vetted like demo). Rules:

    - ``testnet``: not called (the spot testnet has no /sapi): one warning saying so;
    - a client without a /sapi URL (ccxt's demo table has none): a warning, except live: ``KeyStoreError``;
    - ``enableWithdrawals``: ``KeyRefused`` on live, a warning elsewhere;
    - ``enableSpotAndMarginTrading`` false: ``KeyRefused``;
    - ``ipRestrict`` false: a warning (Binance revokes trading on an unrestricted key after 30 days).

    A failing request becomes ``KeyRefused`` (the exchange rejected the key) or ``KeyStoreError`` (anything else),
    its message scrubbed of the key and secret."""
    if network not in (*NETWORKS, "sim"):
        raise KeyStoreError(f"unknown network {network!r}: expected one of {', '.join((*NETWORKS, 'sim'))}")
    if network == "testnet":
        return [TESTNET_UNVETTED]
    import ccxt

    hidden = _client_secrets(client)
    api = getattr(client, "urls", {}).get("api")
    if not (isinstance(api, dict) and api.get("sapi")):
        if network == "live":
            raise KeyStoreError("cannot vet the live API key: this client has no /sapi URL")
        return [f"the {network} API has no /sapi in ccxt: the key's permissions cannot be vetted there"]
    try:
        reply = client.sapi_get_account_apirestrictions()
    except ccxt.AuthenticationError as exc:  # PermissionDenied included
        raise KeyRefused(f"the exchange rejected the {network} API key: {scrub_exception(exc, hidden)}") from None
    except Exception as exc:
        raise KeyStoreError(f"could not vet the {network} API key: {scrub_exception(exc, hidden)}") from None
    if not isinstance(reply, dict):
        raise KeyStoreError(f"could not vet the {network} API key: apiRestrictions replied {type(reply).__name__}")

    def flag(field: str) -> bool:
        value = reply.get(field)
        if not isinstance(value, bool):
            raise KeyStoreError(f"could not vet the {network} API key: apiRestrictions has no boolean {field!r}")
        return value

    warnings: list[str] = []
    if flag("enableWithdrawals"):
        message = (f"the {network} API key can withdraw funds: create a trade-only key (API management: enable "
                   f"Spot & Margin Trading only, never Withdrawals) and use that")
        if network == "live":
            raise KeyRefused(message)
        warnings.append(message)
    if not flag("enableSpotAndMarginTrading"):
        message = f"the {network} API key cannot trade spot: enable Spot & Margin Trading on it"
        if network == "testnet":  # unreachable today (the testnet is not called); kept for the rule's sake
            warnings.append(message)
        else:
            raise KeyRefused(message)
    if not flag("ipRestrict"):
        expiry = reply.get("tradingAuthorityExpirationTime")
        when = ""
        if isinstance(expiry, int | float) and expiry > 0:
            when = time.strftime(" (trading expires %Y-%m-%d %H:%M UTC)", time.gmtime(expiry / 1000))
        warnings.append(f"the {network} API key has no IP restriction: Binance disables trading on unrestricted "
                        f"keys after 30 days{when}; restrict it to this host's IP address")
    return warnings


# --------------------------------------------------------------------------------------------------------- redaction
MIN_SECRET_LENGTH = 4  # shorter strings are not secrets, and hiding every "a" would wreck the text
_SIGNATURE = re.compile(r"""(?i)(signature['"]?\s*[:=]\s*['"]?)[^&\s'",;)}\]]+""")
_APIKEY_HEADER = re.compile(r"""(?i)(x-mbx-apikey['"]?\s*[:=]\s*['"]?)[^&\s'",;)}\]]+""")
REDACTED_LOGGERS: tuple[str, ...] = ("ccxt", "ccxt.base.exchange", "urllib3.connectionpool")
QUIETED_LOGGERS: tuple[str, ...] = ("ccxt", "ccxt.base.exchange")


def _secret_strings(secrets: Any) -> list[str]:
    if secrets is None:
        return []
    if isinstance(secrets, str | Credentials):
        secrets = [secrets]
    out: list[str] = []
    for item in secrets:
        if isinstance(item, Credentials):
            out.extend(item.secrets)
        elif isinstance(item, str) and len(item) >= MIN_SECRET_LENGTH:
            out.append(item)
    return out


def _variants(secrets: Iterable[str]) -> list[str]:
    found = set()
    for value in secrets:
        found.update(v for v in (value, quote(value, safe=""), quote_plus(value)) if len(v) >= MIN_SECRET_LENGTH)
    return sorted(found, key=len, reverse=True)


def _redact(text: str, variants: list[str]) -> str:
    for value in variants:
        text = text.replace(value, "***")
    text = _SIGNATURE.sub(r"\1***", text)
    return _APIKEY_HEADER.sub(r"\1***", text)


def redact(text: Any, secrets: Iterable[str | Credentials | None] | str | Credentials | None) -> str:
    """``text`` with every secret in ``secrets`` (strings or ``Credentials``; also URL-encoded), every
    ``signature=...`` value and every ``X-MBX-APIKEY`` header value replaced by ``***``."""
    return _redact(text if isinstance(text, str) else str(text), _variants(_secret_strings(secrets)))


def scrub_exception(exc: BaseException, secrets: Iterable[str | Credentials | None] | str | Credentials | None) -> str:
    """``"Type: message"`` with the message redacted (``redact``): safe for logs, the journal and alerts."""
    message = redact(str(exc), secrets).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class SecretRedactor(logging.Filter):
    """A logging filter that formats each record's message (``msg % args``), redacts it (``redact``) and stores
    it back with no args; a traceback is formatted and redacted into ``exc_text`` (``exc_info`` is dropped so no
    handler formats it again). It never drops a record."""

    def __init__(self, secrets: Iterable[str | Credentials | None] | str | Credentials | None = ()) -> None:
        super().__init__()
        self._variants: list[str] = []
        self._secrets: tuple[str, ...] = ()
        self._attached: list[logging.Filterer] = []
        self.add(secrets)

    def __repr__(self) -> str:
        return f"SecretRedactor({len(self._secrets)} secrets)"

    def add(self, secrets: Iterable[str | Credentials | None] | str | Credentials | None) -> None:
        """Hide these too."""
        self._secrets = tuple(dict.fromkeys((*self._secrets, *_secret_strings(secrets))))
        self._variants = _variants(self._secrets)

    def redact(self, text: Any) -> str:
        return _redact(text if isinstance(text, str) else str(text), self._variants)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: still logged, still redacted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = self.redact(message), ()
        if record.exc_info:
            record.exc_text = self.redact(_FORMATTER.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def attach(self, target: logging.Filterer) -> None:
        if self not in target.filters:
            target.addFilter(self)
            self._attached.append(target)

    def uninstall(self) -> None:
        """Remove this filter from every logger and handler ``install_redaction`` put it on."""
        global _installed
        for target in self._attached:
            target.removeFilter(self)
        self._attached.clear()
        if _installed is self:
            _installed = None


_FORMATTER = logging.Formatter()
_installed: SecretRedactor | None = None


def install_redaction(credentials: Iterable[str | Credentials | None] | str | Credentials | None) -> SecretRedactor:
    """Hide ``credentials`` (``Credentials`` or secret strings) in every log record: the process-wide
    ``SecretRedactor`` (made on the first call, extended on later ones) goes on every handler of the root logger
    and on the loggers ``ccxt``, ``ccxt.base.exchange`` (where ccxt logs each request's signed URL and headers at
    DEBUG) and ``urllib3.connectionpool`` (signed URLs at DEBUG). The two ccxt loggers are set to INFO or above.

    Call it after logging is configured: a handler added to the root logger later is not covered (records of the
    loggers above are redacted at the source whatever their handlers)."""
    global _installed
    redactor = _installed or SecretRedactor()
    redactor.add(credentials)
    for handler in logging.getLogger().handlers:
        redactor.attach(handler)
    for name in REDACTED_LOGGERS:
        redactor.attach(logging.getLogger(name))
    for name in QUIETED_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.INFO))
    _installed = redactor
    return redactor


# --------------------------------------------------------------------------------------------------------------- CLI
def _ask(env: str, prompt: str) -> str:
    value = os.environ.get(env)
    if value:
        return value
    try:
        return getpass.getpass(prompt)
    except (EOFError, KeyboardInterrupt):
        raise KeyStoreError(f"cancelled (no {prompt.rstrip(': ')}; or set {env})") from None


def _keys_add(args: argparse.Namespace) -> int:
    import ccxt

    try:
        if args.exchange not in ccxt.exchanges:
            raise KeyStoreError(f"unknown exchange {args.exchange!r}: not one of ccxt's exchange ids")
        store = Keystore(args.keystore)
        if not args.overwrite and store.exists() and any(e["name"] == args.name for e in store.names()):
            raise KeyStoreError(f"key '{args.name}' exists already in {store.path}: remove it first or pass "
                                f"--overwrite")
        api_key = _ask(ADD_API_KEY_ENV, "API key: ").strip()
        secret = _ask(ADD_SECRET_ENV, "API secret: ").strip()
        if os.environ.get(PASSPHRASE_ENV):
            passphrase = os.environ[PASSPHRASE_ENV]
        else:
            passphrase = _ask(PASSPHRASE_ENV, "keystore passphrase for this key: ")
            if passphrase != _ask(PASSPHRASE_ENV, "the passphrase again: "):
                raise KeyStoreError("the passphrases do not match")
        store.add(args.name, args.exchange, args.network, api_key, secret, passphrase, overwrite=args.overwrite)
    except KeyStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"key {args.name} ({args.exchange}, {args.network}) saved to {store.path}")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    try:
        store = Keystore(args.keystore)
        if not store.path.exists():
            print(f"no keystore at {store.path}: add a key with 'spotgym keys add NAME'")
            return 0
        rows = store.names()
    except KeyStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"no keys in {store.path}")
        return 0
    table = [("NAME", "EXCHANGE", "NETWORK")] + [(r["name"], r["exchange"], r["network"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(2)]
    for name, exchange, network in table:
        print(f"{name:<{widths[0]}}  {exchange:<{widths[1]}}  {network}")
    return 0


def _keys_remove(args: argparse.Namespace) -> int:
    try:
        store = Keystore(args.keystore)
        store.remove(args.name)
    except KeyStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"key {args.name} removed from {store.path}")
    return 0


def add_keys_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``keys add | list | remove`` to ``subparsers`` (the top-level ``add_subparsers()`` of ``spotgym``); each
    command's ``func(args)`` returns the exit status. Returns the ``keys`` parser."""
    keystore_help = "keystore file (default $XDG_CONFIG_HOME/spotgym/keys.json or ~/.config/spotgym/keys.json)"
    keys = subparsers.add_parser(
        "keys", help="the encrypted keystore of exchange API keys: add, list, remove",
        description="Exchange API keys, each encrypted with its own passphrase (scrypt + AES-256-GCM) in a mode-0600 "
                    "file. Live trading takes a key by name (with the passphrase from a prompt or "
                    f"{PASSPHRASE_ENV}) or from SPOTGYM_<LIVE|TESTNET|DEMO>_API_KEY / _API_SECRET. Use trade-only "
                    "keys: a live key that can withdraw is refused.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    add = keys_sub.add_parser(
        "add", help="store an API key (prompts for key, secret and passphrase; nothing is echoed)",
        description=f"Prompts for the API key, the secret and a passphrase (twice), echoing nothing. For "
                    f"non-interactive use they are read from {ADD_API_KEY_ENV}, {ADD_SECRET_ENV} and "
                    f"{PASSPHRASE_ENV} when set.")
    add.add_argument("name", help="the key's name, e.g. main or testnet1")
    add.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    network = add.add_mutually_exclusive_group()
    network.add_argument("--testnet", dest="network", action="store_const", const="testnet",
                         help="a spot testnet key (testnet.binance.vision)")
    network.add_argument("--demo", dest="network", action="store_const", const="demo",
                         help="a demo trading key (demo-api.binance.com)")
    add.set_defaults(network="live")
    add.add_argument("--overwrite", action="store_true", help="replace a key of the same name")
    add.add_argument("--keystore", default=None, metavar="FILE", help=keystore_help)
    add.set_defaults(func=_keys_add)

    ls = keys_sub.add_parser("list", help="the stored keys' names, exchanges and networks (never the keys)")
    ls.add_argument("--keystore", default=None, metavar="FILE", help=keystore_help)
    ls.set_defaults(func=_keys_list)

    rm = keys_sub.add_parser("remove", help="delete a stored key")
    rm.add_argument("name", help="the key's name")
    rm.add_argument("--keystore", default=None, metavar="FILE", help=keystore_help)
    rm.set_defaults(func=_keys_remove)
    return keys
