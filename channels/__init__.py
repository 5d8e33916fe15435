"""Siyu channel adapters: one file each, behind `channels.base.Channel`, registered by name.

`ADAPTERS` maps the config's `adapter:` value to its class; each class carries its own
`Settings` model (extending `channels.base.ChannelSettings`).
"""

from __future__ import annotations

from typing import Any

from channels.aliyun.outbound_bot import AliyunOutboundBotChannel
from channels.aliyun.sms import AliyunSmsChannel
from channels.aliyun.voice import AliyunVoiceChannel
from channels.base import Channel, ChannelContext, ChannelSettings
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
