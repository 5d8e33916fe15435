"""The callback server's routes come from the adapters' own declarations (`push_routes`), and exist only
for adapters that are configured and authenticated (issue 14)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from starlette.routing import Route

from channels.aliyun.sms import PUSH_ACK, AliyunSmsSettings
from channels.base import ChannelSettings
from channels.tencent.sms import CALLBACK_ACK, TencentSmsSettings
from channels.wechat.template import ACKNOWLEDGEMENT, WechatTemplateSettings
from engine.clock import zone
from engine.run.callbacks import PushTally, build_app, push_off, served_routes

SECRET = "s3cret-path-0123456789abcdefghijkl"


def aliyun(**extra: object) -> AliyunSmsSettings:
    return AliyunSmsSettings.model_validate({"adapter": "aliyun_sms", "access_key_id": "k", "access_key_secret": "s",
                                             "sign_name": "麦德氏", **extra})


def tencent(**extra: object) -> TencentSmsSettings:
    return TencentSmsSettings.model_validate({"adapter": "tencent_sms", "secret_id": "i", "secret_key": "k",
                                              "sdk_app_id": "1400000000", "sign_name": "麦德氏", **extra})


def wechat(**extra: object) -> WechatTemplateSettings:
    return WechatTemplateSettings.model_validate({"adapter": "wechat_template", "app_id": "wx1", "app_secret": "s",
                                                  **extra})


def test_no_channel_configured__serves_no_route() -> None:
    """Aliyun's and Tencent's pushes used to be served whatever was configured; now nothing is."""
    assert served_routes({}) == []


def test_configured_with_a_secret__serves_the_vendors_routes_with_their_acknowledgements() -> None:
    channels: dict[str, ChannelSettings] = {"sms": aliyun(callback_secret=SECRET,
                                                          fallback=tencent(callback_secret=SECRET))}
    routes = {s.route.route: s for s in served_routes(channels)}  # type: ignore[arg-type]
    assert set(routes) == {"aliyun/sms-report", "aliyun/sms-up", "tencent/sms-status", "tencent/sms-reply"}
    assert routes["aliyun/sms-up"].route.ack == PUSH_ACK and routes["tencent/sms-reply"].route.ack == CALLBACK_ACK
    assert all(s.route.secrets == (SECRET,) for s in routes.values())
    assert routes["aliyun/sms-report"].origin.senders == {("sms", None), ("sms", "aliyun_sms")}
    assert routes["tencent/sms-status"].origin.senders == {("sms", "tencent_sms")}


def test_without_secret_or_with_push_off__no_route_and_the_reason() -> None:
    channels: dict[str, ChannelSettings] = {"sms": aliyun(fallback=tencent(callback_secret=SECRET, push=False)),
                                            "template": wechat(token="t")}
    assert served_routes(channels) == []  # type: ignore[arg-type]
    assert push_off(channels) == [  # type: ignore[arg-type]
        ("sms", "aliyun_sms", "no callback_secret"), ("sms", "tencent_sms", "push: off"),
        ("template", "wechat_template", "push_mode safe needs encoding_aes_key")]


@pytest.mark.parametrize("secret", ["short", "x" * 31, "has space " * 4, "中文" * 20, ["a" * 32, "b" * 32, "c" * 32]])
def test_callback_secret__shape_is_checked_and_never_echoed(secret: object) -> None:
    with pytest.raises(ValidationError) as raised:
        aliyun(callback_secret=secret)
    message = str(raised.value.errors()[0]["msg"])
    assert "32" in message or "two" in message
    assert all(str(part) not in message for part in (secret if isinstance(secret, list) else [secret]))


def test_build_app__paths_hold_the_secret_and_wechat_is_signed_instead() -> None:
    channels: dict[str, ChannelSettings] = {"sms": aliyun(callback_secret=SECRET),
                                            "template": wechat(token="t", push_mode="plain")}
    app = build_app(None, channels, PushTally(zone("Asia/Shanghai"), lambda: None))  # type: ignore[arg-type]
    served = {(r.path, m) for r in app.routes if isinstance(r, Route) for m in r.methods or ()}
    assert served == {("/callbacks/aliyun/sms-report/{secret}", "POST"), ("/callbacks/aliyun/sms-up/{secret}", "POST"),
                      ("/callbacks/wechat", "GET"), ("/callbacks/wechat", "HEAD"), ("/callbacks/wechat", "POST")}
    [template] = [s for s in served_routes(channels) if s.route.route == "wechat"]  # type: ignore[arg-type]
    assert template.route.ack == ACKNOWLEDGEMENT and template.route.open is not None and not template.route.secrets
