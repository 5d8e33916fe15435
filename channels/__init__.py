"""Siyu channel adapters: one file each, behind `channels.base.Channel`, registered by name.

`ADAPTERS` maps the config's `adapter:` value to its class; each class carries its own
`Settings` model (extending `channels.base.ChannelSettings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.aliyun.outbound_bot import AliyunOutboundBotChannel
from channels.aliyun.sms import AliyunSmsChannel
from channels.aliyun.voice import AliyunVoiceChannel
from channels.base import Channel, ChannelContext, ChannelSettings, ChecksMessages, MessageCheck
from channels.fallback import FallbackChannel, resolve_sms_settings
from channels.log import LogChannel
from channels.stub import StubChannel
from channels.tencent.sms import TencentSmsChannel
from channels.wechat.template import WechatTemplateChannel
from channels.wechat.wecom import WecomChannel

ADAPTERS: dict[str, Any] = {
    "log": LogChannel,
    "stub": StubChannel,
    "aliyun_sms": AliyunSmsChannel,
    "tencent_sms": TencentSmsChannel,
    "wechat_template": WechatTemplateChannel,
    "wecom": WecomChannel,
    "aliyun_voice": AliyunVoiceChannel,
    "aliyun_outbound_bot": AliyunOutboundBotChannel,
}


resolve_sms_settings(AliyunSmsChannel.Settings, TencentSmsChannel.Settings)


UNCONFIGURED_CHECKS: dict[str, MessageCheck] = {"template": WechatTemplateChannel.message_check(None)}
"""The checks that need no settings, for channel names with no configured adapter (a dry-run without
`--config`): the `template` channel is WeChat's, whose limits hold for every account; the other
channels' rules depend on the provider and its templates, so none apply."""


def message_checks(configured: Mapping[str, ChannelSettings]) -> dict[str, MessageCheck]:
    """Each channel's `MessageCheck`, built from its settings alone (no network, no HTTP client): the
    configured adapter's (with a `fallback:`, the primary provider's rules apply; adapters without
    rules, such as `log`, check nothing), and `UNCONFIGURED_CHECKS` for channels not configured."""
    checks = {name: check for name, check in UNCONFIGURED_CHECKS.items() if name not in configured}
    for name, settings in configured.items():
        adapter = ADAPTERS[settings.adapter]
        if isinstance(adapter, ChecksMessages):
            checks[str(name)] = adapter.message_check(settings)
    return checks


def build_channel(name: str, settings: ChannelSettings, context: ChannelContext | None = None) -> Channel:
    """The adapter for channel `name`, configured by `settings` (already validated); with a
    `fallback:` provider, both behind one `FallbackChannel`."""
    context = context or ChannelContext()
    channel: Channel = ADAPTERS[settings.adapter](name, settings, context)
    fallback = getattr(settings, "fallback", None)
    if fallback is not None:
        second: Channel = ADAPTERS[fallback.adapter](name, fallback, context)
        channel = FallbackChannel(name, channel, settings, second, fallback, context.clock)
    return channel
