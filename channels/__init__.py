"""Siyu channel adapters: one file each, behind `channels.base.Channel`, registered by name.

`ADAPTERS` maps the config's `adapter:` value to its class; each class carries its own
`Settings` model (extending `channels.base.ChannelSettings`).
"""

from __future__ import annotations

from typing import Any

from channels.base import Channel, ChannelContext, ChannelSettings
from channels.log import LogChannel
from channels.stub import StubChannel

ADAPTERS: dict[str, Any] = {
    "log": LogChannel,
    "stub": StubChannel,
}


def build_channel(name: str, settings: ChannelSettings, context: ChannelContext | None = None) -> Channel:
    """The adapter for channel `name`, configured by `settings` (already validated)."""
    channel: Channel = ADAPTERS[settings.adapter](name, settings, context or ChannelContext())
    return channel
