"""WeChat/WeCom push crypto and the replay guard: the vendors' published vectors, refusals, fuzz."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from channels.wechat.crypto import (
    AccountKeys,
    MessageCrypto,
    PushMode,
    PushRefused,
    ReplayGuard,
    open_push,
    plain_signature,
    verify_echo,
)

# WeChat's "消息加解密说明" (official account, safe mode), its push and its reply example.
OA = AccountKeys("AAAAA", "A" * 43, "wxba5fad812f8e6fb9")
OA_ENCRYPT = ("+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVza"
              "zhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYw"
              "KSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=")
OA_QUERY = {"signature": "6c5c811b55cc85e0e1b54100749188c20beb3f5d", "timestamp": "1714112445",
            "nonce": "415670741", "openid": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "encrypt_type": "aes",
            "msg_signature": "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"}
OA_MESSAGE = (b'{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY",'
              b'"CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}')
OA_PUSHED_AT = datetime.fromtimestamp(1714112445, UTC)

# WeCom's "加解密方案说明" example (the corpid is the receive id).
WECOM = AccountKeys("QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7")
WECOM_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvu"
    "JTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+Ltw"
    "Gc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V"
    "2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1pt"
    "DAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==")

ACCOUNT = AccountKeys("tok-siyu", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wx0123456789abcdef")
NOW = datetime(2026, 5, 20, 10, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def _xml_push(encrypted: str, **clear: str) -> bytes:
    fields = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in clear.items())
    return (f"<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>{fields}"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>").encode()


def _signed_push(message: bytes, at: datetime, nonce: str = "1320562132",
                 account: AccountKeys = ACCOUNT) -> tuple[dict[str, str], bytes]:
    """A safe-mode push of `message` as the vendor would send it at `at`: (query, body)."""
    crypto = account.crypto()
    encrypted = crypto.encrypt(message)
    timestamp = str(int(at.timestamp()))
    query = {"timestamp": timestamp, "nonce": nonce, "encrypt_type": "aes",
             "signature": plain_signature(account.token, timestamp, nonce),
             "msg_signature": crypto.signature(timestamp, nonce, encrypted)}
    return query, _xml_push(encrypted)


def _refusal(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    """The reason `call` is refused with (it must be)."""
    with pytest.raises(PushRefused) as refused:
        call(*args, **kwargs)
    return refused.value.reason


# -- the codec --------------------------------------------------------------------------------------------

def test_message_crypto__wechat_published_push_verifies_and_decrypts() -> None:
    """The official account example of WeChat's document: msg_signature over the Encrypt, and
    the 167-byte message addressed to appid wxba5fad812f8e6fb9 inside it."""
    crypto = OA.crypto()
    assert crypto.signature("1714112445", "415670741", OA_ENCRYPT) == OA_QUERY["msg_signature"]
    assert plain_signature("AAAAA", "1714112445", "415670741") == OA_QUERY["signature"]
    assert crypto.decrypt(OA_ENCRYPT) == OA_MESSAGE


def test_message_crypto__wechat_published_reply_encrypts_byte_for_byte() -> None:
    """With the document's 16 leading bytes, encrypting its reply gives its Encrypt and MsgSignature."""
    crypto = OA.crypto()
    encrypted = crypto.encrypt(b'{"demo_resp":"good luck"}', nonce16=b"707722b803182950")
    assert encrypted == "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="
    assert crypto.signature("1713424427", "415670741", encrypted) == "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"


def test_message_crypto__wecom_published_callback_decrypts_with_the_corpid() -> None:
    """WeCom's example callback: its msg_signature, and a text message "hello" for the corpid."""
    crypto = WECOM.crypto()
    assert crypto.signature("1409659813", "1372623149", WECOM_ENCRYPT) == "477715d11cdb4164915debcba66cb864d751f3e6"
    fields = {e.tag: e.text for e in ET.fromstring(crypto.decrypt(WECOM_ENCRYPT))}
    assert (fields["Content"], fields["MsgId"], fields["ToUserName"]) == (
        "hello", "4561255354251345929", "wx5823bf96d3bd56c7")


def test_message_crypto__round_trip_keeps_any_message() -> None:
    """What `encrypt` seals, `decrypt` opens, for empty, short, multi-byte and block-sized messages."""
    crypto = ACCOUNT.crypto()
    for message in (b"", b"x", "<xml><Status><![CDATA[成功]]></Status></xml>".encode(), b"y" * 32, b"z" * 1000):
        assert crypto.decrypt(crypto.encrypt(message)) == message
    assert crypto.encrypt(b"same") != crypto.encrypt(b"same")  # 16 fresh random bytes each time


def test_message_crypto__layout_matches_a_computation_from_scratch() -> None:
    """Decrypting by hand with the documented layout (AES-256-CBC, IV = key[:16], PKCS#7 to 32,
    16 random bytes + big-endian length + message + receive id) finds what was sealed."""
    message = b"<xml><MsgID>200163836</MsgID></xml>"
    encrypted = ACCOUNT.crypto().encrypt(message, nonce16=bytes(range(16)))
    key = base64.b64decode("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    assert len(plain) % 32 == 0 and plain[-plain[-1]:] == bytes([plain[-1]]) * plain[-1]
    assert plain[:16] == bytes(range(16))
    assert int.from_bytes(plain[16:20], "big") == len(message)
    assert plain[20:20 + len(message)] == message
    assert plain[20 + len(message):-plain[-1]] == b"wx0123456789abcdef"


def test_message_crypto__message_for_another_receive_id_is_refused() -> None:
    """A message sealed for another appid, with the same key, is refused: "wrong receive id"."""
    other = MessageCrypto("tok-siyu", ACCOUNT.encoding_aes_key or "", "wx-somebody-else")
    assert _refusal(ACCOUNT.crypto().decrypt, other.encrypt(b"<xml/>")) == "wrong receive id"


@pytest.mark.parametrize("encrypted", ["", "not base64!", "QUJD", base64.b64encode(b"x" * 15).decode(),
                                       "Ａ" * 24, OA_ENCRYPT])
def test_message_crypto__garbage_is_undecryptable(encrypted: str) -> None:
    """Broken base64, a length that is not whole AES blocks, or another key's message: "undecryptable"."""
    assert _refusal(ACCOUNT.crypto().decrypt, encrypted) == "undecryptable"


@pytest.mark.parametrize("key", ["A" * 42, "A" * 44, "A" * 42 + "-", "A" * 42 + "=", ""])
def test_message_crypto__bad_key_is_refused_without_quoting_it(key: str) -> None:
    """A key that is not 43 base64 characters fails at construction, and the message never holds it."""
    with pytest.raises(ValueError, match="encoding_aes_key") as error:
        MessageCrypto("tok", key, "wx1")
    assert "AAAA" not in str(error.value)
    with pytest.raises(ValueError, match="encoding_aes_key"):
        AccountKeys("tok", key, "wx1")


def test_account_keys__repr_holds_no_secret() -> None:
    """Logging an account or a codec shows its receive id only."""
    shown = repr(ACCOUNT) + repr(ACCOUNT.crypto())
    assert "wx0123456789abcdef" in shown
    assert "tok-siyu" not in shown and "abcdefghij" not in shown


def test_import__cryptography_waits_until_a_message_is_opened() -> None:
    """Importing the module loads no AES code; the first decrypt does."""
    probe = ("import sys, channels.wechat.crypto as c; before = 'cryptography' in sys.modules; "
             "k = c.MessageCrypto('t', 'A' * 43, 'wx'); k.decrypt(k.encrypt(b'x')); "
             "print(before, 'cryptography' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.split() == ["False", "True"]


# -- open_push --------------------------------------------------------------------------------------------

def test_open_push__wechat_published_push_opens_at_its_time() -> None:
    """The document's push, on the day it was sent, is admitted and decrypted."""
    guard = ReplayGuard(clock=lambda: OA_PUSHED_AT + timedelta(seconds=2))
    assert open_push(OA_QUERY, _xml_push(OA_ENCRYPT), keys=[OA], mode="safe", guard=guard) == OA_MESSAGE
    assert len(guard) == 1


def test_open_push__replayed_2020_push_is_refused_by_the_timestamp_window() -> None:
    """A push signed in 2020, body untouched, replayed now: refused, and not remembered. The same
    push at its own time passes."""
    query, body = _signed_push(b"<xml><MsgID>1</MsgID></xml>", datetime(2020, 3, 1, 9, 0, tzinfo=UTC))
    guard = ReplayGuard(clock=Clock(NOW))
    assert _refusal(open_push, query, body, keys=[ACCOUNT], mode="safe", guard=guard) == "timestamp outside ±300 s"
    assert len(guard) == 0
    then = ReplayGuard(clock=Clock(datetime(2020, 3, 1, 9, 4, 59, tzinfo=UTC)))
    assert open_push(query, body, keys=[ACCOUNT], mode="safe", guard=then) == b"<xml><MsgID>1</MsgID></xml>"


def test_open_push__the_same_push_twice_is_refused() -> None:
    """A push replayed a minute later, inside the window, is refused: "nonce seen before"."""
    clock = Clock(NOW)
    guard = ReplayGuard(clock=clock)
    query, body = _signed_push(b"<xml/>", NOW)
    open_push(query, body, keys=[ACCOUNT], mode="safe", guard=guard)
    clock.advance(60)
    assert _refusal(open_push, query, body, keys=[ACCOUNT], mode="safe", guard=guard) == "nonce seen before"


def test_open_push__tampered_ciphertext_is_a_bad_signature_and_leaves_the_guard_empty() -> None:
    """One character of Encrypt changed: the signature no longer covers it. The refused push is not
    remembered, so forgers cannot fill the guard."""
    query, body = _signed_push(b"<xml><MsgID>7</MsgID></xml>", NOW)
    encrypted = ET.fromstring(body).findtext("Encrypt") or ""
    tampered = _xml_push(("B" if encrypted[0] != "B" else "C") + encrypted[1:])
    guard = ReplayGuard(clock=Clock(NOW))
    assert _refusal(open_push, query, tampered, keys=[ACCOUNT], mode="safe", guard=guard) == "bad signature"
    assert len(guard) == 0


def test_open_push__a_forger_who_signs_with_the_token_still_cannot_decrypt_a_flipped_block() -> None:
    """Even a correctly signed but bit-flipped ciphertext (a leaked token, not key) opens to nothing."""
    crypto = ACCOUNT.crypto()
    raw = bytearray(base64.b64decode(crypto.encrypt(b"<xml><MsgID>7</MsgID></xml>")))
    raw[-20] ^= 0x01  # the last block decrypts to noise: padding and receive id break
    encrypted = base64.b64encode(bytes(raw)).decode()
    query = {"timestamp": str(int(NOW.timestamp())), "nonce": "9"}
    query["msg_signature"] = crypto.signature(query["timestamp"], "9", encrypted)
    reason = _refusal(open_push, query, _xml_push(encrypted), keys=[ACCOUNT], mode="safe",
                      guard=ReplayGuard(clock=Clock(NOW)))
    assert reason in {"undecryptable", "wrong receive id"}


def test_open_push__compat_mode_trusts_only_the_encrypted_part() -> None:
    """Compat pushes carry clear fields beside Encrypt; a forged clear field changes nothing."""
    query, body = _signed_push(b"<xml><Status><![CDATA[success]]></Status></xml>", NOW)
    encrypted = ET.fromstring(body).findtext("Encrypt") or ""
    forged = _xml_push(encrypted, Status="failed:user block")
    opened = open_push(query, forged, keys=[ACCOUNT], mode="compat", guard=ReplayGuard(clock=Clock(NOW)))
    assert opened == b"<xml><Status><![CDATA[success]]></Status></xml>"


def test_open_push__the_signing_account_decrypts_even_when_two_share_a_token() -> None:
    """Two accounts, one token, two keys: the push opens with the key of the account it was sent to."""
    twin = AccountKeys("tok-siyu", "B" * 43, "wx-twin")
    query, body = _signed_push(b"<xml><MsgID>2</MsgID></xml>", NOW, account=twin)
    opened = open_push(query, body, keys=[ACCOUNT, twin, OA], mode="safe", guard=ReplayGuard(clock=Clock(NOW)))
    assert opened == b"<xml><MsgID>2</MsgID></xml>"


@pytest.mark.parametrize("body", [b"", b"not xml", b"<xml><ToUserName>x</ToUserName></xml>",
                                  b"<xml><Encrypt></Encrypt></xml>",
                                  b'<?xml version="1.0" encoding="no-such"?><xml/>'])
def test_open_push__body_without_encrypt_is_a_value_error(body: bytes) -> None:
    """A body that is not XML or has no Encrypt is the caller's 400, not a 403."""
    query, _ = _signed_push(b"<xml/>", NOW)
    with pytest.raises(ValueError, match="push body"):
        open_push(query, body, keys=[ACCOUNT], mode="safe", guard=ReplayGuard(clock=Clock(NOW)))


def test_open_push__safe_mode_without_any_key_is_a_value_error() -> None:
    """Safe mode with no account's EncodingAESKey is a configuration mistake, not the pusher's fault."""
    query, body = _signed_push(b"<xml/>", NOW)
    with pytest.raises(ValueError, match="encoding_aes_key"):
        open_push(query, body, keys=[AccountKeys("tok-siyu", None, "wx1")], mode="safe",
                  guard=ReplayGuard(clock=Clock(NOW)))


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("msg_signature", "é" * 40, "bad signature"),
    ("msg_signature", "0" * 41, "bad signature"),
    ("msg_signature", "0" * 100_000, "bad signature"),
    ("timestamp", "１７１４１１２４４５", "timestamp not an integer"),
    ("timestamp", "9" * 100_000, "timestamp not an integer"),
    ("timestamp", "-1", "timestamp not an integer"),
    ("nonce", "nonce with spaces", "bad nonce"),
    ("nonce", "n" * 100_000, "bad nonce"),
    ("nonce", "随机", "bad nonce"),
])
def test_open_push__odd_query_values_are_refused_cleanly(name: str, value: str, reason: str) -> None:
    """Non-ASCII or absurdly long signature, timestamp or nonce: PushRefused, nothing else."""
    query, body = _signed_push(b"<xml/>", NOW)
    assert _refusal(open_push, {**query, name: value}, body, keys=[ACCOUNT], mode="safe",
                    guard=ReplayGuard(clock=Clock(NOW))) == reason


def test_open_push__plain_mode_checks_the_plain_signature_then_the_guard() -> None:
    """WeChat's plain-mode example: `signature` over token, timestamp and nonce admits the body as
    it came; a second time it is refused; another token's signature never passes."""
    query = {"signature": "899cf89e464efb63f54ddac96b0a0a235f53aa78", "timestamp": "1714037059",
             "nonce": "486452656"}
    body = b'{"ToUserName":"gh_97417a04a28d","Event":"debug_demo"}'
    guard = ReplayGuard(clock=lambda: datetime.fromtimestamp(1714037060, UTC))
    plain = AccountKeys("AAAAA", None, "gh_97417a04a28d")
    assert open_push(query, body, keys=[plain], mode="plain", guard=guard) == body
    assert _refusal(open_push, query, body, keys=[plain], mode="plain", guard=guard) == "nonce seen before"
    assert _refusal(open_push, query, body, keys=[ACCOUNT], mode="plain", guard=guard) == "bad signature"


def test_open_push__safe_mode_refuses_a_plain_mode_push() -> None:
    """An account configured safe refuses a push that carries only the plain `signature`."""
    query, body = _signed_push(b"<xml/>", NOW)
    del query["msg_signature"]
    assert _refusal(open_push, query, body, keys=[ACCOUNT], mode="safe",
                    guard=ReplayGuard(clock=Clock(NOW))) == "bad signature"


# -- verify_echo ------------------------------------------------------------------------------------------

def test_verify_echo__answers_echostr_when_the_plain_signature_checks_out() -> None:
    """WeChat's address-check example (token AAAAA): the echostr comes back as sent; another
    token's check is refused, and echostr that is not a plain token is a 400."""
    query = {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441696", "echostr": "4375120948345356249",
             "timestamp": "1714036504", "nonce": "1514711492"}
    keys = [ACCOUNT, AccountKeys("AAAAA", "A" * 43, "wx1")]
    assert verify_echo(query, keys) == "4375120948345356249"
    assert _refusal(verify_echo, query, [ACCOUNT]) == "bad signature"
    with pytest.raises(ValueError, match="echostr"):
        verify_echo({**query, "echostr": "<script>alert(1)</script>"}, keys)
    with pytest.raises(ValueError, match="echostr"):
        verify_echo({k: v for k, v in query.items() if k != "echostr"}, keys)


# -- the replay guard -------------------------------------------------------------------------------------

def test_replay_guard__nonce_reused_within_600_s_is_refused_and_forgotten_after() -> None:
    """A push stamped at the window's far edge stays refused for all the 600 s it could pass the
    window (no gap at the edge), and is forgotten after; the nonce with a new timestamp passes."""
    clock = Clock(NOW)
    guard = ReplayGuard(clock=clock)
    edge = str(int(NOW.timestamp()) + 300)
    guard.admit(edge, "42")
    clock.advance(599)
    assert _refusal(guard.admit, edge, "42") == "nonce seen before"
    clock.advance(1)  # 600 s: the timestamp still passes the window, so the entry must still be there
    assert _refusal(guard.admit, edge, "42") == "nonce seen before"
    clock.advance(1)
    assert _refusal(guard.admit, edge, "42") == "timestamp outside ±300 s"
    guard.admit(str(int(clock.at.timestamp())), "42")
    assert len(guard) == 1  # the old entry went when the new one came


def test_replay_guard__memory_stays_at_capacity() -> None:
    """10,001 pushes in one second: 10,000 are remembered, the oldest is the one forgotten, and
    forgetting a push that could still be replayed is logged."""
    guard = ReplayGuard(clock=Clock(NOW))
    stamp = str(int(NOW.timestamp()))
    for nonce in range(10_000):
        guard.admit(stamp, str(nonce))
    with capture_logs() as logs:
        guard.admit(stamp, "10000")
    assert len(guard) == 10_000
    assert [e["event"] for e in logs] == ["push.replay_guard_full"]
    guard.admit(stamp, "0")  # forgotten to make room, so admitted again
    assert _refusal(guard.admit, stamp, "10000") == "nonce seen before"


def test_replay_guard__concurrent_replays_admit_exactly_one() -> None:
    """Eight threads present the same push at once: one is admitted, seven are refused."""
    guard = ReplayGuard(clock=Clock(NOW))
    start = threading.Barrier(8)
    stamp = str(int(NOW.timestamp()))

    def present(_: int) -> bool:
        start.wait(timeout=10)
        try:
            guard.admit(stamp, "777")
        except PushRefused:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(present, range(8))) == [False] * 7 + [True]


def test_replay_guard__release_lets_the_vendors_retry_in() -> None:
    """A push whose handling failed is released: the retry with the same timestamp and nonce passes."""
    guard = ReplayGuard(clock=Clock(NOW))
    stamp = str(int(NOW.timestamp()))
    guard.admit(stamp, "5")
    guard.release(stamp, "5")
    guard.admit(stamp, "5")
    assert len(guard) == 1


def test_replay_guard__ttl_shorter_than_twice_the_window_is_refused() -> None:
    """A ttl under twice the window would forget pushes that can still pass the window."""
    with pytest.raises(ValueError, match="twice the window"):
        ReplayGuard(window=timedelta(seconds=300), ttl=timedelta(seconds=599))


# -- fuzz -------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUERY_KEYS = st.sampled_from(["signature", "msg_signature", "timestamp", "nonce", "echostr", "encrypt_type", "x"])
MODES: st.SearchStrategy[PushMode] = st.sampled_from(["safe", "compat", "plain"])


@FUZZ
@given(st.dictionaries(QUERY_KEYS, st.text(max_size=60) | st.from_regex(r"[0-9a-f]{40}", fullmatch=True)),
       st.binary(max_size=300) | st.text(max_size=200).map(lambda t: f"<xml><Encrypt>{t}</Encrypt></xml>".encode()
                                                           if "<" not in t and "&" not in t else t.encode()),
       MODES)
@example({"timestamp": "1", "nonce": "1", "msg_signature": "0" * 40}, b"<xml><Encrypt>AAAA</Encrypt></xml>", "safe")
def test_open_push__random_requests_raise_only_refusals(query: Mapping[str, str], body: bytes,
                                                        mode: PushMode) -> None:
    """Whatever the query and body, open_push answers, refuses (403) or calls it a bad request (400)."""
    try:
        opened = open_push(query, body, keys=[ACCOUNT, OA], mode=mode, guard=ReplayGuard(clock=Clock(NOW)))
    except (PushRefused, ValueError) as refused:
        assert str(refused) and "tok-siyu" not in str(refused) and "abcdefghij" not in str(refused)
    else:
        assert isinstance(opened, bytes)


@FUZZ
@given(st.binary(min_size=1, max_size=200), st.booleans())
def test_open_push__signed_garbage_is_refused_as_undecryptable(garbage: bytes, whole_blocks: bool) -> None:
    """A correctly signed, fresh push whose Encrypt is random bytes never opens and never crashes."""
    if whole_blocks:
        garbage = garbage[: len(garbage) // 16 * 16] or bytes(16)
    encrypted = base64.b64encode(garbage).decode()
    stamp = str(int(NOW.timestamp()))
    query = {"timestamp": stamp, "nonce": "3", "msg_signature": ACCOUNT.crypto().signature(stamp, "3", encrypted)}
    reason = _refusal(open_push, query, _xml_push(encrypted), keys=[ACCOUNT], mode="safe",
                      guard=ReplayGuard(clock=Clock(NOW)))
    assert reason in {"undecryptable", "wrong receive id"}


def test_plain_signature__is_sha1_of_the_sorted_parts() -> None:
    """The plain scheme, computed independently."""
    expected = hashlib.sha1(b"".join(sorted([b"tok", b"1700000000", b"n1"]))).hexdigest()
    assert plain_signature("tok", "1700000000", "n1") == expected
