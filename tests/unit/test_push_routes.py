"""The callback server's routes come from the adapters' own declarations (`push_routes`)."""

from __future__ import annotations

import hashlib

import pytest
from starlette.routing import Route

from channels.aliyun.sms import PUSH_ACK
from channels.tencent.sms import CALLBACK_ACK
from channels.wechat.template import ACKNOWLEDGEMENT, WechatTemplateSettings
from engine.run.callbacks import build_app, push_routes

UNSIGNED = {
    ("/callbacks/aliyun/sms-report", "aliyun"), ("/callbacks/aliyun/sms-up", "aliyun"),
    ("/callbacks/aliyun/voice-report", "aliyun"), ("/callbacks/tencent/sms-status", "tencent"),
    ("/callbacks/tencent/sms-reply", "tencent"),
}


def _account(token: str | None) -> WechatTemplateSettings:
    return WechatTemplateSettings(adapter="wechat_template", app_id=f"wx-{token}", app_secret="s", token=token)


def _signed(token: str, timestamp: str = "1700000000", nonce: str = "n1") -> dict[str, str]:
    """A push's query as WeChat signs it with `token`."""
    signature = hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()
    return {"signature": signature, "timestamp": timestamp, "nonce": nonce}


def test_push_routes__unsigned_vendor_pushes_are_served_whatever_is_configured() -> None:
    """Aliyun's and Tencent's pushes are served with no channel configured, each acknowledged the
    vendor's way; WeChat's needs an account token to check its signature, so without one it is not."""
    routes = {r.path: r for r in push_routes([])}
    assert {(r.path, r.vendor) for r in routes.values()} == UNSIGNED
    assert routes["/callbacks/aliyun/sms-up"].ack == PUSH_ACK
    assert routes["/callbacks/tencent/sms-reply"].ack == CALLBACK_ACK
    assert all(r.methods == ("POST",) and r.verify is None and r.echo is None for r in routes.values())
    assert {r.path for r in push_routes([_account(None)])} == set(routes)


def test_push_routes__wechat_push_signed_by_any_configured_account_passes() -> None:
    """One WeChat route for every account: a push signed with either account's token passes, a
    push signed with another token does not."""
    [wechat] = [r for r in push_routes([_account("tok-a"), _account("tok-b"), _account(None)])
                if r.vendor == "wechat"]
    assert (wechat.path, wechat.methods, wechat.ack, wechat.echo) == (
        "/callbacks/wechat", ("GET", "POST"), ACKNOWLEDGEMENT, "echostr")
    assert wechat.verify is not None
    assert wechat.verify(_signed("tok-a")) and wechat.verify(_signed("tok-b"))
    assert not wechat.verify(_signed("tok-c"))
    assert not wechat.verify({})


@pytest.mark.parametrize(("accounts", "wechat"), [([], False), ([_account("tok-a")], True)])
def test_build_app__one_route_per_declared_push(accounts: list[WechatTemplateSettings], wechat: bool) -> None:
    """The app serves exactly the declared paths with their methods."""
    app = build_app(book=None, channels=accounts)  # type: ignore[arg-type]  # routes only: nothing is pushed
    served = {(r.path, m) for r in app.routes if isinstance(r, Route) for m in r.methods or ()}
    expected = {(p, "POST") for p, _ in UNSIGNED}
    if wechat:
        expected |= {("/callbacks/wechat", "GET"), ("/callbacks/wechat", "POST"), ("/callbacks/wechat", "HEAD")}
    assert served == expected
