"""The `siyu` command line. Errors are shown here, once, as `file:line:col: message`; never a traceback.

An unexpected exception is one line (engine.logs.summarise: its type and first line, masked, never
a statement's rows) and exit code 70; `SIYU_DEBUG=1` shows the traceback, still masked. Warnings
(a secret written in the config, a playbook link skipped) go to stderr as `file:line:col: warning: …`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, Any

from engine import __version__
from engine.errors import Problem, ProblemsError, SiyuError, UsageError

Command = Callable[[argparse.Namespace], int]
_opened: list[Any] = []  # engines opened by this command, disposed when it ends


def _warn(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def _load_config(args: argparse.Namespace, strict_secrets: bool = False) -> tuple[Any, list[Problem]]:
    from engine.config import load_config

    return load_config(Path(args.config) if getattr(args, "config", None) else None, strict_secrets=strict_secrets)


def _config(args: argparse.Namespace) -> Any:
    """The config `--config` names (defaults without one), its warnings shown."""
    settings, warnings = _load_config(args)
    _warn(warnings)
    return settings


def _playbooks(paths: Sequence[str], settings: Any, warn: bool = True) -> Any:
    """The playbooks at `paths` (default: the config's directory); the links skipped there shown."""
    from engine.grammar.loader import load_playbooks, skipped_links

    named = [Path(p) for p in (paths or [settings.playbooks])]
    if warn:
        _warn(skipped_links(named))
    return load_playbooks(named)


def _playbooks_or_examples(paths: Sequence[str], settings: Any, config_given: bool) -> tuple[Any, str]:
    """`check` and `demo`: the playbooks named, else the config's when a config was given, else
    ./playbooks when present, else the examples bundled with Siyu; and which of them it was."""
    from engine import examples
    from engine.grammar.loader import load_playbooks

    if paths or config_given or Path(settings.playbooks).is_dir():
        return _playbooks(paths, settings, warn=False), ", ".join(paths) or str(settings.playbooks)
    bundled = examples.playbooks()
    return load_playbooks([bundled]), f"the bundled examples ({bundled})"


def _engine(url: str, require: bool = True) -> Any:
    from engine.store.connect import open_engine, require_schema

    engine = open_engine(url)
    _opened.append(engine)
    if require:
        require_schema(engine)
    return engine


def _send_windows(settings: Any) -> dict[str, Any]:
    """Each channel's send window: the config's channel settings, and the SMS adapter's default
    (08:00–22:00) when the config has no `sms` channel."""
    from channels.fallback import SmsSettings

    windows = {name: channel.send_window for name, channel in settings.channels.items() if channel.send_window}
    if "sms" not in settings.channels:
        windows["sms"] = SmsSettings.model_fields["send_window"].default
    return windows


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def cmd_check(args: argparse.Namespace) -> int:
    from engine.grammar.lint import lint_playbooks
    from engine.grammar.loader import skipped_links

    settings, findings = _load_config(args)
    loaded, source = _playbooks_or_examples(args.paths, settings, args.config is not None)
    # Every finding of `check`, errors and warnings alike: each further check appends its own.
    findings += skipped_links([Path(p) for p in (args.paths or [settings.playbooks])])
    findings += lint_playbooks(loaded, timezone=settings.timezone, send_windows=_send_windows(settings))
    findings += _data_problems(args, settings, loaded)
    for finding in findings:
        print(finding, file=sys.stderr)
    warnings = sum(f.is_warning for f in findings)
    errors = len(findings) - warnings
    if errors or (args.strict and warnings):
        strict = "; --strict: warnings count as errors" if args.strict and warnings else ""
        print(f"siyu check: {_plural(errors, 'error')}, {_plural(warnings, 'warning')} in {source}{strict}",
              file=sys.stderr)
        return 1
    print(f"ok: {len(loaded)} playbook(s) valid in {source}; {_plural(warnings, 'warning')}")
    return 0


def _data_url(args: argparse.Namespace, settings: Any) -> str | None:
    """--db, else the database a given --config names; None: stay offline."""
    if args.db:
        return str(args.db)
    return str(settings.database.url) if args.config and "database" in settings.model_fields_set else None


def _data_problems(args: argparse.Namespace, settings: Any, loaded: Any) -> list[Any]:
    """`check --db`: the playbooks' data values against the database (warnings and errors)."""
    from engine.decide.data_check import check_data
    from engine.errors import DatabaseError, Problem

    url = _data_url(args, settings)
    try:
        return check_data(_engine(url), loaded, settings.links) if url else []
    except DatabaseError as exc:
        if args.db:
            raise
        # the config's database may not exist yet (a fresh setup): the playbooks are still valid
        return [Problem(args.config, None, None, f"data values not checked: {exc.message}", severity="warning")]


def cmd_values(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from engine.store import catalogue

    settings = _config(args)
    url = _data_url(args, settings)
    if url is None:
        raise UsageError("values needs --db URL (or --config naming a database)")
    engine = _engine(url)
    table = Table(box=None, pad_edge=False)
    table.add_column({"categories": "category", "cities": "city"}.get(args.kind, args.kind.removesuffix("s")))
    table.add_column("members", justify="right")
    if args.kind == "events":
        table.add_column("attributes")
        for name, event in catalogue.event_types(engine).items():
            table.add_row(name, f"{event.members:,}", ", ".join(sorted(event.attributes)))
    else:
        counts: dict[str, int] = catalogue.value_counts(engine, args.kind)
        for value, n in counts.items():
            table.add_row(value, f"{n:,}")
    Console(width=200).print(table)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from engine.clock import now, parse_at, zone
    from engine.decide.compiler import Frame, compile_audience
    from engine.decide.preview import playbook_zone

    settings = _config(args)
    (loaded,) = _playbooks([args.playbook], settings) or [None]
    engine = _engine(args.db, require=False)
    tz = zone(settings.timezone)
    at = parse_at(args.at, tz) if args.at else now()
    playbook = loaded.playbook
    frame = Frame(at, playbook_zone(playbook, settings.timezone), engine.dialect.name)
    compiled = compile_audience(playbook, frame, event_window=settings.misfire_grace_td
                                if playbook.is_event_triggered else None)
    sql = compiled.statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": args.literal})
    print(f"-- {playbook.id} as of {at.isoformat()} ({engine.dialect.name})")
    print(str(sql).strip() + ";")
    if not args.literal:
        print("-- parameters:")
        for key, value in sql.params.items():
            print(f"--   {key} = {value!r}")
    return 0


def _private(path: str, flags: int) -> int:
    """`open`'s opener for files Siyu creates: readable by the owner only (0600) from the start."""
    return os.open(path, flags, 0o600)


def _open_out(stack: ExitStack, out: str | None) -> IO[str]:
    """`--out`: stdout, or a file (a new one is 0600: a dry-run lists members, their offers and messages)."""
    if out is None or out == "-":
        return sys.stdout
    return stack.enter_context(open(out, "w", encoding="utf-8", newline="", opener=_private))


def _message_checks(settings: Any) -> dict[str, Any]:
    """The configured channels' vendor rules (only the settings-free ones without a config)."""
    from channels import message_checks

    return message_checks({str(name): cfg for name, cfg in settings.channels.items()})


def cmd_dry_run(args: argparse.Namespace) -> int:
    from engine.clock import parse_at, parse_duration, zone
    from engine.decide.preview import dry_run, writer_for

    settings = _config(args)
    at = parse_at(args.at, zone(settings.timezone))
    loaded = _playbooks(args.paths, settings)
    engine = _engine(args.db)
    try:
        window = parse_duration(args.window) if args.window else settings.misfire_grace_td
    except ValueError as exc:
        raise UsageError(str(exc), location="--window") from None
    playbooks = [lp.playbook for lp in loaded]
    with ExitStack() as stack:
        out = _open_out(stack, args.out)
        writer = writer_for(args.format, out, {p.id: p.name for p in playbooks})
        if hasattr(writer, "start"):
            for p in playbooks:
                if p.enabled:
                    writer.start(p.id)
        for decision in dry_run(engine, playbooks, at, default_timezone=settings.timezone,
                                links=settings.links, event_window=window, policies=settings.policies,
                                costs=settings.costs, vendor_quiet_hours=settings.vendor_quiet_hours,
                                checks=_message_checks(settings)):
            writer.write(decision)
        writer.close()
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from engine.clock import parse_at, zone
    from engine.decide.explain import explain, find_playbook, render_explanation

    settings = _config(args)
    at = parse_at(args.at, zone(settings.timezone))
    playbook = find_playbook(args.playbook, settings)
    engine = _engine(args.db)
    explanation = explain(engine, playbook, args.member_id, at, settings, event_id=args.event,
                          checks=_message_checks(settings))
    render_explanation(explanation, sys.stdout)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from engine.clock import zone
    from engine.store.connect import upgrade
    from engine.store.importer import import_directory

    try:
        tz = zone(args.tz)
    except ValueError as exc:
        raise UsageError(str(exc), location="--tz") from None
    directory = Path(args.directory)
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory")
    engine = _engine(args.db, require=False)
    upgrade(engine)
    report = import_directory(engine, directory, tz, progress=sys.stderr.isatty(), strict=args.strict)
    for result in report.files:
        print(f"{result.file}: {result.rows:,} row(s) imported" if not result.problems
              else f"{result.file}: nothing imported ({len({p.line for p in result.problems})} bad row(s))")
    for problem in (*report.warnings, *report.problems):
        print(problem, file=sys.stderr)
    return 1 if report.problems else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine import examples
    from engine.clock import now, zone
    from engine.decide.preview import TableWriter, dry_run
    from engine.store.connect import upgrade
    from engine.store.demo import DemoSpec, ensure_demo

    config_given = args.config is not None
    if not config_given:  # the demo uses the example config's links: ./config.example.yaml, else the bundled one
        local = Path(examples.CONFIG_EXAMPLE)
        args.config = str(local if local.is_file() else examples.config_example())
    settings = _config(args)
    tz = zone(settings.timezone)
    try:
        today = date.fromisoformat(args.today) if args.today else now().astimezone(tz).date()
    except ValueError:
        raise UsageError(f"bad date {args.today!r}: use YYYY-MM-DD", location="--today") from None
    if args.members < 1:
        raise UsageError("must be at least 1", location="--members")
    engine = _engine(args.db, require=False)
    upgrade(engine)
    spec = DemoSpec(members=args.members, seed=args.seed, today=today, tz=tz)
    created = ensure_demo(engine, spec, progress=sys.stderr.isatty())
    print(f"{'created' if created else 'reusing'} demo brand in {engine.url.render_as_string(hide_password=True)}: "
          f"{args.members:,} members, seed {args.seed}, today {today.isoformat()}", file=sys.stderr)
    loaded, source = _playbooks_or_examples([args.playbooks] if args.playbooks else [], settings, config_given)
    playbooks = [lp.playbook for lp in loaded]
    at = datetime.combine(today, time(10, 0), tzinfo=tz)
    writer = TableWriter(sys.stdout, {p.id: p.name for p in playbooks})
    for p in playbooks:
        if p.enabled:
            writer.start(p.id)
    for decision in dry_run(engine, playbooks, at, default_timezone=settings.timezone,
                            links=settings.links, event_window=settings.misfire_grace_td,
                            policies=settings.policies, costs=settings.costs,
                            vendor_quiet_hours=settings.vendor_quiet_hours, checks=_message_checks(settings)):
        writer.write(decision)
    print(f"dry-run of {len(playbooks)} playbook(s) in {source} at {at.isoformat()}; nothing was sent")
    writer.close()
    return 0


def cmd_tick(args: argparse.Namespace) -> int:
    import asyncio

    from engine.clock import now, parse_at, zone
    from engine.grammar.loader import skipped_links
    from engine.logs import configure
    from engine.run.service import Service

    settings = _config(args)
    _warn(skipped_links([Path(settings.playbooks)]))
    configure(settings.log.format if not args.quiet else "json", "warning" if args.quiet else settings.log.level)
    at = parse_at(args.at, zone(settings.timezone)) if args.at else now()
    service = Service.from_settings(settings, Path(args.config))
    try:
        done = asyncio.run(service.tick(at))
    finally:
        service.engine.dispose()
    dispatched = {**done.dispatched, **{f"receipt {k}": v for k, v in done.receipts.items() if v}}
    summary = {**{f"decided {k}": v for k, v in sorted(done.decided.items())},
               **{f"dispatched {k}": v for k, v in sorted(dispatched.items())}}
    width = max((len(k) for k in summary), default=0)
    print(f"siyu tick as of {at.isoformat()}")
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value:>8,}")
    if not summary:
        print("  nothing was due")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from engine.clock import now
    from engine.run.status import render, report

    settings = _config(args)
    loaded = _playbooks([], settings)
    engine = _engine(settings.database.url)
    status = report(engine, settings, [lp.playbook for lp in loaded], now())
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2, default=str))
    else:
        render(status, sys.stdout)
    return 0


def cmd_suppress(args: argparse.Namespace) -> int:
    from engine import ledger
    from engine.clock import now
    from engine.logs import mask_phone
    from engine.store.connect import write_transaction

    settings = _config(args)
    engine = _engine(settings.database.url)
    if args.action == "list":
        with engine.connect() as conn:
            rows = ledger.list_suppressions(conn)
        for row in rows:
            subject = f"member {row['member_id']}" if row["member_id"] else f"phone {mask_phone(row['phone'])}"
            print(f"{subject:<28} {row['channel']:<9} {row['source']:<8} {row['created_at']:%Y-%m-%d %H:%M} "
                  f"{row['reason'] or ''}")
        print(f"{len(rows)} suppression(s)")
        return 0
    if (args.member is None) == (args.phone is None):
        raise UsageError("give exactly one of --member ID or --phone NUMBER")
    from engine.grammar.addresses import CHANNEL_NAMES, mainland_mobile, masked

    if args.phone is not None and args.action == "add" and mainland_mobile(args.phone) is None:
        raise UsageError(f"{masked(args.phone)!r} is not a mainland mobile number (+86, 0086 or 86, spaces "
                         "and dashes are fine)", location="--phone")

    if args.channel != "all" and args.channel not in CHANNEL_NAMES:
        raise UsageError(f"unknown channel {args.channel!r}: one of all, {', '.join(CHANNEL_NAMES)}",
                         location="--channel")
    with write_transaction(engine) as conn:
        if args.action == "add":
            added = ledger.add_suppression(conn, member_id=args.member, phone=args.phone, channel=args.channel,
                                           reason=args.reason, source="manual", now=now())
            print("suppression added" if added else "already suppressed")
        else:
            removed = ledger.remove_suppression(conn, member_id=args.member, phone=args.phone, channel=args.channel)
            print(f"{removed} suppression(s) removed")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from engine.logs import configure
    from engine.run.daemon import Daemon

    settings, warnings = _load_config(args, strict_secrets=True)  # the daemon: a secret written in the config is an error
    _warn(warnings)
    configure(settings.log.format, settings.log.level)

    async def main() -> int:
        return await Daemon(Path(args.config)).run()

    return asyncio.run(main())


def cmd_channel(args: argparse.Namespace) -> int:
    from engine import ledger
    from engine.store.connect import write_transaction

    settings = _config(args)
    if args.name not in settings.channels:
        raise UsageError(f"no channel {args.name!r} in {args.config} (configured: {', '.join(settings.channels)})")
    engine = _engine(settings.database.url)
    with write_transaction(engine) as conn:
        resumed = ledger.resume_channel(conn, args.name)
    print(f"{args.name}: resumed" if resumed else f"{args.name}: was not paused")
    return 0


def cmd_fakes(args: argparse.Namespace) -> int:
    from channels.fakes.serve import serve
    from engine import examples

    return serve(args.port, args.db, args.write_config, sys.stdout, examples=examples.root())


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from engine.store.connect import upgrade

    engine = _engine(args.db, require=False)
    upgrade(engine)
    print(f"{engine.url.render_as_string(hide_password=True)}: schema is up to date")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siyu", description="Siyu (私域): private-domain marketing playbooks")
    parser.add_argument("--version", action="version", version=f"siyu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = command("check", cmd_check, "validate playbooks (exit 1 on any problem)")
    p.add_argument("paths", nargs="*",
                   help="playbook files or directories (default: config playbooks, else ./playbooks, else the bundled examples)")
    p.add_argument("--config", help="config file")
    p.add_argument("--strict", action="store_true", help="warnings are errors (exit 1)")
    p.add_argument("--db", help="database URL: also check the data values playbooks name (tags, tiers, …)")

    p = command("values", cmd_values, "list the data values playbooks can name, with member counts")
    p.add_argument("kind", nargs="?", default="tags",
                   choices=("tags", "categories", "skus", "tiers", "cities", "platforms", "events"))
    p.add_argument("--db", help="database URL (default: the database --config names)")
    p.add_argument("--config", help="config file")

    p = command("compile", cmd_compile, "print a playbook's audience SQL for the database's dialect")
    p.add_argument("playbook", help="a playbook file")
    p.add_argument("--db", required=True, help="database URL (selects the SQL dialect)")
    p.add_argument("--at", help="evaluation instant (default: now)")
    p.add_argument("--config", help="config file")
    p.add_argument("--literal", action="store_true", help="inline the parameters (for reading only)")

    p = command("dry-run", cmd_dry_run, "show who each playbook would touch, and why; writes nothing")
    p.add_argument("paths", nargs="*", help="playbook files or directories (default: config playbooks)")
    p.add_argument("--db", required=True, help="database URL")
    p.add_argument("--at", required=True, help="evaluation instant (ISO 8601; no offset = config timezone)")
    p.add_argument("--config", help="config file (links, timezone)")
    p.add_argument("--window", help="event-triggered playbooks: events due in (at − window, at] (default 1h)")
    p.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    p.add_argument("--out", help="output file (default: stdout)")

    p = command("explain", cmd_explain, "why did (or didn't) this member get it?")
    p.add_argument("member_id")
    p.add_argument("playbook", help="a playbook file, or an id in the config's playbooks directory")
    p.add_argument("--db", required=True, help="database URL")
    p.add_argument("--at", required=True, help="evaluation instant")
    p.add_argument("--config", help="config file")
    p.add_argument("--event", help="event id (event-triggered playbooks)")

    p = command("import", cmd_import, "import members/orders/order_items/coupons/events CSV files")
    p.add_argument("directory")
    p.add_argument("--db", required=True, help="database URL")
    p.add_argument("--tz", default="Asia/Shanghai", help="timezone of timestamps without an offset")
    p.add_argument("--strict", action="store_true",
                   help="a phone that is not a mainland mobile number is a bad row (default: imported empty, warned)")

    p = command("demo", cmd_demo, "create (or reuse) a demo brand and dry-run every playbook at 10:00")
    p.add_argument("--db", default="sqlite:///demo.db", help="database URL (default sqlite:///demo.db)")
    p.add_argument("--members", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--today", help="reference date YYYY-MM-DD (default: today)")
    p.add_argument("--playbooks", help="playbook directory (default: config playbooks, else ./playbooks, else the bundled examples)")
    p.add_argument("--config", help="config file (default: ./config.example.yaml when present, else the bundled one)")

    p = command("tick", cmd_tick, "one round as of --at: decide what is due, dispatch it, exit")
    p.add_argument("--config", required=True, help="config file")
    p.add_argument("--at", help="the instant (default: now; no offset = config timezone)")
    p.add_argument("--quiet", action="store_true", help="log warnings only")

    p = command("run", cmd_run, "the daemon: fire playbooks at their times, poll events, dispatch, until stopped")
    p.add_argument("--config", required=True, help="config file")

    p = command("status", cmd_status, "playbooks' last and next runs, today's counts, spend, rows to look at")
    p.add_argument("--config", required=True, help="config file")
    p.add_argument("--json", action="store_true", help="one JSON object")

    p = command("suppress", cmd_suppress, "opt-outs: add, remove or list suppressions")
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("--member", help="member id")
    p.add_argument("--phone", help="phone number")
    p.add_argument("--channel", default="all", help="a channel name, or all (default)")
    p.add_argument("--reason", help="why (kept with the suppression)")
    p.add_argument("--config", required=True, help="config file")

    p = command("channel", cmd_channel, "channels: `siyu channel resume NAME --config FILE` ends a pause now")
    p.add_argument("action", choices=("resume",))
    p.add_argument("name", help="channel name (sms, ai_call, wecom, template)")
    p.add_argument("--config", required=True, help="config file")

    p = command("db", cmd_db_upgrade, "database schema: `siyu db upgrade --db URL`")
    p.add_argument("action", choices=("upgrade",))
    p.add_argument("--db", required=True, help="database URL")

    p = command("fakes", cmd_fakes, "serve fake vendors on 127.0.0.1 for a local trial (until Ctrl-C)")
    p.add_argument("--port", type=int, default=9100, help="base port: the fakes take port+1 … port+6 (default 9100; 0: any free ports)")
    p.add_argument("--write-config", metavar="FILE", help="write a config that points every channel at the fakes")
    p.add_argument("--db", default="sqlite:///demo.db", help="database URL for that config (default sqlite:///demo.db)")
    return parser


_PARAMETERS = re.compile(r"^\[(SQL )?parameters: .*$", re.MULTILINE)
"""SQLAlchemy's `[parameters: …]` line of a statement error (absent when the engine hides them)."""


def _masked_traceback(exc: BaseException) -> str:
    """SIYU_DEBUG's traceback: phones and URL passwords masked, no statement parameters."""
    import traceback

    from engine.logs import mask_text

    return _PARAMETERS.sub("[parameters not shown]", mask_text("".join(traceback.format_exception(exc))))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ProblemsError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except SiyuError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        print("siyu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the edge: never a traceback for people, unless asked for (masked then too)
        from engine.logs import summarise

        if os.environ.get("SIYU_DEBUG"):
            print(_masked_traceback(exc), file=sys.stderr, end="")
        print(f"siyu: internal error: {summarise(exc)} (run with SIYU_DEBUG=1 for details)", file=sys.stderr)
        return 70
    finally:
        while _opened:
            _opened.pop().dispose()
