"""WeChat and WeCom push crypto ("safe mode") and the replay guard in front of it.

Both vendors use one scheme (the "WXBizMsgCrypt" scheme of their sample code; WeChat
"消息加解密说明", developers.weixin.qq.com/doc/subscription/guide/dev/push/encryption, and WeCom
"加解密方案说明", developer.work.weixin.qq.com/document/path/90968):

- EncodingAESKey is 43 characters of the base64 alphabet; AESKey = base64decode(key + "="), 32 bytes,
  and the IV is AESKey's first 16 bytes. AES-256-CBC; PKCS#7 pads to a multiple of 32 bytes (not 16).
- The plaintext is 16 random bytes + the message length (4 bytes, big-endian) + the message + the
  receive id (the appid of an official account, the corpid for WeCom); `Encrypt` is its base64.
- `msg_signature` = sha1 of token, timestamp, nonce and `Encrypt`, sorted and joined (hex); the plain
  scheme's `signature` is the same over token, timestamp and nonce only, so it never covers the body.

An official account chooses a mode: plain (body in clear, `signature` only), compat (the clear fields
and `Encrypt` side by side) or safe (`Encrypt` only). Safe and compat pushes carry `encrypt_type=aes`
and `msg_signature`; `open_push` trusts only the encrypted part, the only part a signature covers.

`ReplayGuard` refuses a push whose timestamp is outside ±300 s or that was seen before. It is asked
only after a signature checked out, so a forger cannot fill it. `cryptography` is imported where AES
runs (`MessageCrypto._cbc`), so importing this module stays cheap for the commands that never decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import structlog

from channels.push import PushRefused
from engine.clock import now as clock_now

log = structlog.get_logger("siyu")

PushMode = Literal["safe", "compat", "plain"]
DEFAULT_PUSH_MODE: PushMode = "safe"
"""`plain` only when set explicitly (and the server warns at start): its signature never covers the body."""

PAD_BLOCK = 32
"""PKCS#7 pads to this many bytes (both vendors' documents: K = 32)."""

_HEADER = 20  # 16 random bytes + the 4-byte length
AES_KEY_SHAPE = re.compile(r"[A-Za-z0-9+/]{43}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{40}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[!-~]{1,128}")  # printable ASCII: WeChat's nonces are digits, WeCom's digits or letters
_ECHO = re.compile(r"[A-Za-z0-9+/=_.-]{1,256}")

BAD_SIGNATURE = "bad signature"
BAD_TIMESTAMP = "timestamp not an integer"
BAD_NONCE = "bad nonce"
REPLAYED = "nonce seen before"
UNDECRYPTABLE = "undecryptable"
WRONG_RECEIVER = "wrong receive id"


def plain_signature(token: str, timestamp: str, nonce: str) -> str:
    """The plain scheme's `signature`: sha1 of token, timestamp and nonce, sorted and joined (hex)."""
    return _sha1_sorted(token, timestamp, nonce)


def _sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # the vendors' scheme, not our choice


def _aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AESKey; ValueError (which never quotes the key) when it is not 43 base64 characters."""
    if len(encoding_aes_key) != 43:
        raise ValueError(f"encoding_aes_key must be 43 characters, not {len(encoding_aes_key)}")
    if not AES_KEY_SHAPE.fullmatch(encoding_aes_key):
        raise ValueError("encoding_aes_key has a character outside the base64 alphabet (A-Z a-z 0-9 + /)")
    return base64.b64decode(encoding_aes_key + "=")


class MessageCrypto:
    """One account's codec: encrypts, decrypts and signs the way WeChat and WeCom do.

    `receive_id` is the appid of an official account or the corpid for WeCom; `decrypt`
    refuses a message addressed to anyone else.
    """

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        self._key = _aes_key(encoding_aes_key)
        self._token = token
        self.receive_id = receive_id

    def __repr__(self) -> str:
        return f"MessageCrypto(receive_id={self.receive_id!r})"

    def signature(self, timestamp: str, nonce: str, encrypted: str) -> str:
        """`msg_signature` over this account's token, `timestamp`, `nonce` and `encrypted` (hex)."""
        return _sha1_sorted(self._token, timestamp, nonce, encrypted)

    def encrypt(self, message: bytes, *, nonce16: bytes | None = None) -> str:
        """`Encrypt` (base64) for `message`; `nonce16` fixes the 16 random leading bytes (tests)."""
        leading = os.urandom(16) if nonce16 is None else nonce16
        if len(leading) != 16:
            raise ValueError(f"nonce16 must be 16 bytes, not {len(leading)}")
        if len(message) >= 1 << 32:
            raise ValueError("a message this long does not fit the 4-byte length")
        plain = leading + len(message).to_bytes(4, "big") + message + self.receive_id.encode()
        pad = PAD_BLOCK - len(plain) % PAD_BLOCK
        return base64.b64encode(self._cbc(plain + bytes([pad]) * pad, decrypt=False)).decode("ascii")

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside `encrypted`; PushRefused when its base64, padding or length is broken
        ("undecryptable") or it is addressed to another receive id ("wrong receive id").

        Check the signature first: a decryptor that answers differently for bad padding and a
        wrong receive id must not be offered to anyone who cannot sign.
        """
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except ValueError as exc:  # binascii.Error, or a str that is not ASCII
            raise PushRefused(UNDECRYPTABLE) from exc
        if not raw or len(raw) % 16:
            raise PushRefused(UNDECRYPTABLE)
        plain = self._cbc(raw, decrypt=True)
        pad = plain[-1]
        if not 1 <= pad <= min(PAD_BLOCK, len(plain)) or plain[-pad:] != bytes([pad]) * pad:
            raise PushRefused(UNDECRYPTABLE)
        content = plain[:-pad]
        if len(content) < _HEADER:
            raise PushRefused(UNDECRYPTABLE)
        end = _HEADER + int.from_bytes(content[16:_HEADER], "big")
        if end > len(content):
            raise PushRefused(UNDECRYPTABLE)
        if not hmac.compare_digest(content[end:], self.receive_id.encode()):
            raise PushRefused(WRONG_RECEIVER)
        return content[_HEADER:end]

    def _cbc(self, data: bytes, *, decrypt: bool) -> bytes:
        # imported here, not at the top: see the module docstring
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        cipher = Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))
        context = cipher.decryptor() if decrypt else cipher.encryptor()
        return context.update(data) + context.finalize()


@dataclass(frozen=True)
class AccountKeys:
    """One account's push secrets: its server token, its EncodingAESKey (None in plain mode) and its
    receive id (an official account's appid, WeCom's corpid). A bad key is a ValueError here, at start."""

    token: str = field(repr=False)
    encoding_aes_key: str | None = field(repr=False)
    receive_id: str

    def __post_init__(self) -> None:
        if self.encoding_aes_key is not None:
            _aes_key(self.encoding_aes_key)

    def crypto(self) -> MessageCrypto:
        if self.encoding_aes_key is None:
            raise ValueError(f"account {self.receive_id}: no encoding_aes_key")
        return MessageCrypto(self.token, self.encoding_aes_key, self.receive_id)


class ReplayGuard:
    """Refuses a push whose timestamp is outside now ± `window`, or that was admitted within `ttl`.

    Call `admit` only after the push's signature checked out (`open_push` does): otherwise a
    forger fills the memory and pushes genuine entries out. The memory holds at most `capacity`
    pushes, oldest forgotten first, and is safe to share between threads.

    A push is remembered by (timestamp, nonce): the signature covers both, so a replay repeats
    both, while two genuine pushes that drew the same random nonce in different seconds are both
    admitted. `ttl` must be at least twice `window`: a push stamped `window` ahead of the clock
    stays admissible for 2 × `window`, and its entry must outlive that.
    """

    def __init__(self, window: timedelta = timedelta(seconds=300), capacity: int = 10_000,
                 ttl: timedelta = timedelta(seconds=600), clock: Callable[[], datetime] | None = None) -> None:
        if window <= timedelta(0) or capacity < 1:
            raise ValueError("the replay guard needs a positive window and capacity")
        if ttl < 2 * window:
            raise ValueError(f"ttl ({ttl}) must be at least twice the window ({window}): else a replay outlives "
                             "its entry")
        self.window = window
        self.capacity = capacity
        self.ttl = ttl
        self.clock = clock or clock_now
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # → when it is forgotten (epoch seconds)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, timestamp: str, nonce: str) -> None:
        """Remember this push, or PushRefused: a timestamp that is not an integer or is outside the
        window, a malformed nonce, or a push admitted before."""
        if not isinstance(timestamp, str) or not _TIMESTAMP.fullmatch(timestamp):
            raise PushRefused(BAD_TIMESTAMP)
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise PushRefused(BAD_NONCE)
        now = self.clock().timestamp()
        if abs(int(timestamp) - now) > self.window.total_seconds():
            raise PushRefused(f"timestamp outside ±{self.window.total_seconds():.0f} s")
        key = (timestamp, nonce)
        with self._lock:
            self._forget_expired(now)
            if self._seen.get(key, -1.0) >= now:
                raise PushRefused(REPLAYED)
            self._seen[key] = now + self.ttl.total_seconds()
            self._seen.move_to_end(key)
            pushed_out = 0
            while len(self._seen) > self.capacity:
                pushed_out += self._seen.popitem(last=False)[1] >= now
        if pushed_out:
            log.warning("push.replay_guard_full", capacity=self.capacity, ttl_s=self.ttl.total_seconds())

    def release(self, timestamp: str, nonce: str) -> None:
        """Forget an admitted push whose handling failed, so that the vendor's retry is not refused
        (whether WeChat's retry repeats timestamp and nonce is UNCONFIRMED)."""
        with self._lock:
            self._seen.pop((timestamp, nonce), None)

    def _forget_expired(self, now: float) -> None:
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until >= now:
                return
            del self._seen[key]


def open_push(query: Mapping[str, str], body: bytes, *, keys: Sequence[AccountKeys], mode: PushMode,
              guard: ReplayGuard) -> bytes:
    """The plaintext XML of a POSTed push, once it is proved to come from the vendor and to be new.

    Safe and compat mode: `msg_signature` must sign (token, timestamp, nonce, `<Encrypt>`) for
    one of `keys`; then `guard` admits it, and that account's key decrypts it (compat mode's clear
    fields are ignored: no signature covers them). Plain mode: `signature` must sign (token,
    timestamp, nonce), then `guard` admits it and the body is returned as it came.

    PushRefused (answer 403) for a missing, malformed or wrong signature, timestamp or nonce, a
    replay, or a message that does not decrypt for that account; ValueError (answer 400) for a
    body that is not XML or has no `<Encrypt>`, and for a safe mode without any key.
    """
    if mode not in ("safe", "compat", "plain"):
        raise ValueError(f"unknown push mode {mode!r}: safe, compat or plain")
    timestamp = _query_field(query, "timestamp", _TIMESTAMP, BAD_TIMESTAMP)
    nonce = _query_field(query, "nonce", _NONCE, BAD_NONCE)
    if mode == "plain":
        _check_plain_signature(query, keys, timestamp, nonce)
        guard.admit(timestamp, nonce)
        return body
    given = _query_field(query, "msg_signature", _SIGNATURE, BAD_SIGNATURE).lower()
    encrypted = _encrypted_part(body)
    accounts = [account.crypto() for account in keys if account.encoding_aes_key is not None]
    if not accounts:
        raise ValueError(f"{mode} mode needs an account with an encoding_aes_key")
    signed = [a for a in accounts if hmac.compare_digest(a.signature(timestamp, nonce, encrypted), given)]
    if not signed:
        raise PushRefused(BAD_SIGNATURE)
    guard.admit(timestamp, nonce)
    for account in signed[:-1]:  # two accounts may share a token; the key that decrypts is the sender's
        try:
            return account.decrypt(encrypted)
        except PushRefused:
            continue
    return signed[-1].decrypt(encrypted)


def verify_echo(query: Mapping[str, str], keys: Sequence[AccountKeys]) -> str:
    """The `echostr` to answer an official account's GET address check, once `signature` checks out.

    What the documents say (WeChat "消息推送配置 / 验证消息的确来自微信服务器" and "消息加解密说明"):
    the check is a GET with signature, timestamp, nonce and echostr; `signature` is the plain
    scheme over token, timestamp and nonce, and the answer is echostr exactly as sent ("原样返回").
    Safe mode changes only the POSTed pushes (adding `encrypt_type=aes` and `msg_signature`), so
    the echo stays plain in every mode. WeCom differs: its GET carries `msg_signature` over token,
    timestamp, nonce and an encrypted echostr, and the answer is `MessageCrypto.decrypt(echostr)`.

    No replay guard: answering a replayed check tells the replayer nothing new. echostr must be
    a plain token (letters, digits, `+/=_.-`, at most 256) so that a signature lifted from a log
    cannot make the server echo markup. PushRefused for a bad signature; ValueError for a
    missing or odd echostr.
    """
    timestamp = _query_field(query, "timestamp", _TIMESTAMP, BAD_TIMESTAMP)
    nonce = _query_field(query, "nonce", _NONCE, BAD_NONCE)
    _check_plain_signature(query, keys, timestamp, nonce)
    echo = query.get("echostr")
    if not isinstance(echo, str) or not _ECHO.fullmatch(echo):
        raise ValueError("echostr is missing or not a plain token")
    return echo


def _check_plain_signature(query: Mapping[str, str], keys: Sequence[AccountKeys], timestamp: str,
                           nonce: str) -> None:
    given = _query_field(query, "signature", _SIGNATURE, BAD_SIGNATURE).lower()
    if not any(hmac.compare_digest(plain_signature(a.token, timestamp, nonce), given) for a in keys):
        raise PushRefused(BAD_SIGNATURE)


def _query_field(query: Mapping[str, str], name: str, shape: re.Pattern[str], reason: str) -> str:
    """A query value of the expected shape (ASCII, bounded), or PushRefused before anything is hashed."""
    value = query.get(name)
    if not isinstance(value, str) or not shape.fullmatch(value):
        raise PushRefused(reason)
    return value


def _encrypted_part(body: bytes) -> str:
    try:
        root = ET.fromstring(body)  # expat refuses entity-expansion bombs
    except (ET.ParseError, LookupError, ValueError) as exc:  # LookupError: an unknown declared encoding
        raise ValueError("the push body is not XML") from exc
    element = root.find("Encrypt")
    if element is None or not element.text:
        raise ValueError("the push body has no <Encrypt>")
    return element.text
