"""What `tick` and `run` share: one load of the config, the playbooks and the channels, and the steps of a round.

Every channel a playbook names must be configured; the adapters are built from their
settings; each playbook's contact policy is built once (the gate, the dispatcher and the
claim check all read it); the owner id names this process in leases and runs.

A round is three steps: decide what is due into the ledger, dispatch it, pull receipts.
`siyu tick` runs them once, in order (`Service.tick`); the daemon runs each on its own
schedule (engine.run.daemon), calling the same `decide` and `pull_receipts`, and a
long-lived dispatcher.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from channels import build_channel, message_checks
from channels.base import Channel, ChannelContext
from engine.clock import now as clock_now
from engine.clock import zone
from engine.config import Settings, load_config
from engine.decide.contact_policy import ContactPolicies
from engine.errors import ConfigError, Problem
from engine.grammar.lint import lint_playbooks
from engine.grammar.loader import LoadedPlaybook, load_playbooks, skipped_links
from engine.grammar.playbook import Playbook
from engine.ledger.token_store import LedgerTokenStore
from engine.run.dispatch import Dispatcher
from engine.run.occurrences import Evaluator
from engine.run.receipts import pull_all
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
                continue
            fallback = getattr(settings.channels[step.channel], "fallback", None)
            code = getattr(step.message, "template_code", None)
            if fallback is not None and code is not None and not fallback.maps_template(code):
                line, col = item.source.locate(("channels", index, step.channel, "template_code")) or (None, None)
                problems.append(Problem(str(item.path), line, col,
                                        f"template_code {code!r} cannot be sent by the fallback of channel "
                                        f"{step.channel!r} ({fallback.adapter}): map it in {config_file}"))
    if problems:
        raise ConfigError(problems)


@dataclass(frozen=True)
class Round:
    """What one round did: decisions by `decision[/reason]`, dispatch outcomes, receipts pulled."""

    decided: Counter[str]
    dispatched: Counter[str]
    receipts: Mapping[str, int]


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
    def load(cls, config_path: Path, migrate: bool = True, strict_secrets: bool = False) -> Service:
        """The service for the config at `config_path`; with `strict_secrets` (the daemon) a secret
        written in the config is an error (engine.config)."""
        settings, _ = load_config(config_path, strict_secrets=strict_secrets)
        return cls.from_settings(settings, config_path, migrate)

    @classmethod
    def from_settings(cls, settings: Settings, config_path: Path, migrate: bool = True) -> Service:
        """The service for `settings`, already read from `config_path` (the playbooks are read here)."""
        loaded = load_playbooks([Path(settings.playbooks)])
        check_channels(loaded, settings, str(config_path))
        engine = open_engine(settings.database.url)
        if migrate:
            upgrade(engine)
        context = ChannelContext(store=LedgerTokenStore(engine), clock=clock_now)
        channels: dict[str, Channel] = {str(name): build_channel(name, cfg, context)
                                        for name, cfg in settings.channels.items()}
        contact = ContactPolicies.of((item.playbook for item in loaded), settings.policies, settings.costs,
                                     settings.vendor_quiet_hours)
        return cls(settings, config_path, engine, loaded, channels, contact, owner_id())

    @property
    def playbooks(self) -> list[Playbook]:
        return [item.playbook for item in self.loaded]

    def lint(self) -> list[Problem]:
        """`siyu check`'s warnings: the links skipped in the playbook directory, then the loaded playbooks'
        (with the configured channels' send windows)."""
        windows = {str(name): cfg.send_window for name, cfg in self.settings.channels.items() if cfg.send_window}
        return [*skipped_links([Path(self.settings.playbooks)]),
                *lint_playbooks(self.loaded, timezone=self.settings.timezone, send_windows=windows)]

    def evaluator(self, clock: Callable[[], datetime] = clock_now) -> Evaluator:
        return Evaluator(self.engine, self.settings, self.playbooks, self.contact, self.owner, clock,
                         message_checks({str(name): cfg for name, cfg in self.settings.channels.items()}))

    def dispatcher(self, clock: Callable[[], datetime] = clock_now) -> Dispatcher:
        channel_settings = {str(name): cfg for name, cfg in self.settings.channels.items()}
        return Dispatcher(self.engine, self.settings.dispatch, self.channels, channel_settings, self.contact,
                          zone(self.settings.timezone), self.owner, clock)

    # -- a round's steps ----------------------------------------------------------------------------
    def decide(self, at: datetime, events_since: datetime | None = None,
               clock: Callable[[], datetime] = clock_now) -> Counter[str]:
        """Step 1: decide into the ledger what is due as of `at` (engine.run.occurrences.Evaluator.round):
        events from `events_since` on, or by default from the events watermark (the daemon's way:
        a daemon that was down picks up where it left)."""
        evaluator = self.evaluator(clock)
        return evaluator.round(at, evaluator.events_since(at) if events_since is None else events_since)

    async def pull_receipts(self, at: datetime) -> dict[str, int]:
        """Step 3: the receipts and replies the vendors' pull APIs hold for recent touches."""
        return await pull_all(self.engine, self.channels, at, unsubscribe=self.settings.sms_unsubscribe)

    async def tick(self, at: datetime) -> Round:
        """One round as of `at`, with the clock stopped there: decide what is due in
        (at − misfire_grace, at], send everything due, then pull receipts."""
        decided = await asyncio.to_thread(self.decide, at, at - self.settings.misfire_grace_td, lambda: at)
        dispatched = await self.dispatcher(clock=lambda: at).drain()
        receipts = await self.pull_receipts(at)
        return Round(decided, dispatched, receipts)
