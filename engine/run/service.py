"""Wiring for `tick` and `run`: the config, the playbooks and the channels, checked together once.

Every channel a playbook names must be configured; the adapters are built from their
settings; each playbook's contact policy is built once (the gate, the dispatcher and the
claim check all read it); the owner id names this process in leases and runs.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from channels import build_channel
from channels.base import Channel, ChannelContext
from engine.clock import now as clock_now
from engine.clock import zone
from engine.config import Settings, load_config
from engine.decide.contact_policy import ContactPolicies
from engine.errors import ConfigError, Problem
from engine.grammar.loader import LoadedPlaybook, load_playbooks
from engine.grammar.playbook import Playbook
from engine.run.dispatch import Dispatcher
from engine.run.occurrences import Evaluator
from engine.store.connect import open_engine, upgrade


def owner_id() -> str:
    """This process in leases and runs: host, pid and a random suffix."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(3)}"


def check_channels(loaded: list[LoadedPlaybook], settings: Settings, config_file: str) -> None:
    """Every channel used by an enabled playbook must be configured."""
    problems = []
    for item in loaded:
        if not item.playbook.enabled:
            continue
        for index, step in enumerate(item.playbook.channels):
            if step.channel not in settings.channels:
                line, col = item.source.locate(("channels", index, step.channel), key=True) or (None, None)
                problems.append(Problem(str(item.path), line, col,
                                        f"channel {step.channel!r} is not configured in {config_file} "
                                        f"(configured: {', '.join(settings.channels) or 'none'})"))
    if problems:
        raise ConfigError(problems)


@dataclass
class Service:
    """Everything `tick` and `run` need, built and validated from one config file."""

    settings: Settings
    config_path: Path
    engine: Engine
    loaded: list[LoadedPlaybook]
    channels: dict[str, Channel]
    contact: ContactPolicies  #: each playbook's contact policy, built once for this playbook set
    owner: str

    @classmethod
    def load(cls, config_path: Path, migrate: bool = True) -> Service:
        settings, _ = load_config(config_path)
        loaded = load_playbooks([Path(settings.playbooks)])
        check_channels(loaded, settings, str(config_path))
        engine = open_engine(settings.database.url)
        if migrate:
            upgrade(engine)
        context = ChannelContext(store=engine, clock=clock_now)
        channels: dict[str, Channel] = {str(name): build_channel(name, cfg, context)
                                        for name, cfg in settings.channels.items()}
        contact = ContactPolicies.of((item.playbook for item in loaded), settings.policies, settings.costs,
                                     settings.vendor_quiet_hours)
        return cls(settings, config_path, engine, loaded, channels, contact, owner_id())

    @property
    def playbooks(self) -> list[Playbook]:
        return [item.playbook for item in self.loaded]

    def evaluator(self, clock: Callable[[], datetime] = clock_now) -> Evaluator:
        return Evaluator(self.engine, self.settings, self.playbooks, self.contact, self.owner, clock)

    def dispatcher(self, clock: Callable[[], datetime] = clock_now) -> Dispatcher:
        channel_settings = {str(name): cfg for name, cfg in self.settings.channels.items()}
        return Dispatcher(self.engine, self.settings.dispatch, self.channels, channel_settings, self.contact,
                          zone(self.settings.timezone), self.owner, clock)
