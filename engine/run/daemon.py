"""`siyu run`: the daemon. Scheduler, event poller, dispatcher, reconciler and watchdog, until stopped.

The loop reads top-down: start the side tasks, tell systemd we are ready, wait for SIGTERM
(stop) or SIGHUP (reload), and shut down: stop claiming, let in-flight sends finish within
`dispatch.grace` (pinging the watchdog meanwhile), then exit 0. If a side task dies, the
daemon stops loudly rather than run half-blind.

"A scheduled occurrence runs once" is Siyu's own guarantee (a unique run row per
playbook and scheduled time), not APScheduler's: the scheduler only wakes the daemon up
at the right minute; every wake-up runs all occurrences due in (now − misfire_grace, now]
that have not finished, so a daemon that was down at 10:00 and back at 10:20 runs the
10:00 job once, and several daemons on one PostgreSQL database never run it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from engine.clock import now as clock_now
from engine.clock import zone
from engine.decide.data_check import check_data
from engine.errors import SiyuError
from engine.grammar.cron import Cron
from engine.logs import SUMMARY_LIMIT, log, mask_text, summarise
from engine.run.callbacks import PushTally
from engine.run.dispatch import Dispatcher
from engine.run.service import Service
from engine.run.systemd import Notifier
from engine.store.connect import is_transient, world_readable

PUSH_COUNTS_EVERY = timedelta(minutes=1)
"""How often the callback server's push counts are added to the `callback_counts` table."""
CALLBACK_GRACE = timedelta(seconds=10)
"""At shutdown, how long vendor pushes already received may take to be written and acknowledged
(a push cut off is not acknowledged, and the vendor pushes it again)."""


class PosixCronTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger driven by engine.grammar.cron (POSIX weekday numbering), in the playbook's zone."""

    def __init__(self, cron: Cron, tz: Any) -> None:
        self.cron = cron
        self.tz = tz

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        after = max(previous_fire_time, now - timedelta(seconds=1)) if previous_fire_time else now - timedelta(
            seconds=1)
        return self.cron.next_after(after, self.tz)


class SchedulerLog(logging.Handler):
    """APScheduler's own log records as Siyu's log lines, never its raw tracebacks on stderr: a job
    that raised is one `scheduler.job_failed` line (the job id and `summarise` of the exception); any
    other warning is one `scheduler.warning` line with APScheduler's message, cut short."""

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            # APScheduler passes the job (or its id) as the first argument of its failure messages
            job = record.args[0] if isinstance(record.args, tuple) and record.args else None
            log.error("scheduler.job_failed", job=str(getattr(job, "id", job)), error=summarise(exc))
        else:
            log.warning("scheduler.warning", message=mask_text(record.getMessage())[:SUMMARY_LIMIT])


def route_scheduler_logs() -> None:
    """Send the `apscheduler` loggers' warnings and errors through SchedulerLog only (once per process)."""
    logger = logging.getLogger("apscheduler")
    if not any(isinstance(handler, SchedulerLog) for handler in logger.handlers):
        logger.addHandler(SchedulerLog())
    logger.setLevel(logging.WARNING)
    logger.propagate = False


class Daemon:
    """One Siyu daemon process."""

    def __init__(self, config_path: Path, clock: Callable[[], datetime] = clock_now,
                 notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.service = Service.load(config_path, strict_secrets=True)
        self.dispatcher = self.service.dispatcher(clock)
        self.stop_event = asyncio.Event()
        self.reload_event = asyncio.Event()
        self.exited = asyncio.Event()
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        route_scheduler_logs()
        self.work_lock = asyncio.Lock()  # evaluations run one at a time (decision order = priority order)
        self.tasks: list[asyncio.Task[None]] = []
        self.data_check: asyncio.Task[None] | None = None  # the latest `check --db` of the playbooks, logged
        self.retired: list[Dispatcher] = []  # replaced by a reload: their adapters' connections are closed at exit
        self.push_tally = PushTally(zone(self.service.settings.timezone), clock)

    # -- the loop --------------------------------------------------------------------------------
    async def run(self, install_signal_handlers: bool = True) -> int:
        restore = self._install_signals() if install_signal_handlers else None
        try:
            self._schedule()
            self.scheduler.start()
            await self._round()
            self.tasks = [asyncio.create_task(coro, name=name) for name, coro in (
                ("callbacks", self._serve_callbacks()),
                ("events", self._every(self.service.settings.poll_interval, self._round)),
                ("dispatch", self._dispatch_forever()),
                ("reconcile", self._every(self.service.settings.dispatch.lease / 2,
                                          lambda: self.dispatcher.reconcile())),
                ("receipts", self._every(self.service.settings.poll_interval * 2, self._pull_receipts)),
                ("push_counts", self._every(PUSH_COUNTS_EVERY, self._flush_push_counts, self.exited)),
                # the watchdog keeps pinging through the shutdown grace, until the very end
                ("watchdog", self._every(timedelta(seconds=self.notifier.ping_every), self._ping, self.exited)),
            )]
            self.notifier.ready(self._status())
            if (readable := world_readable(self.service.engine)) is not None:
                log.warning("store.world_readable", path=str(readable),
                            hint="every user of this host can read members' phones and vendors' tokens: chmod 600")
            log.info("daemon.ready", playbooks=len(self.service.playbooks), owner=self.service.owner)
            self._log_lint()
            self.data_check = asyncio.create_task(self._check_data(self.service))
            while not self.stop_event.is_set():
                await self._wait_for_signal_or_failure()
                if self.reload_event.is_set():
                    self.reload_event.clear()
                    await self._reload()
            return await self._shutdown()
        finally:
            if restore is not None:
                restore()

    async def _wait_for_signal_or_failure(self) -> None:
        waiters = [asyncio.create_task(self.stop_event.wait()), asyncio.create_task(self.reload_event.wait())]
        done, _ = await asyncio.wait([*waiters, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        for task in self.tasks:
            failure = task.exception() if task in done and not task.cancelled() else None
            if failure is not None:
                died = summarise(failure)
                log.error("daemon.side_task_died", task=task.get_name(), error=died)
                self.stop_event.set()
                raise SiyuError(f"the {task.get_name()} task died: {died}")

    async def _shutdown(self) -> int:
        self.notifier.stopping()
        log.info("daemon.stopping", grace_s=self.service.settings.dispatch.grace.total_seconds())
        self.dispatcher.claiming = False
        self.scheduler.shutdown(wait=False)
        dispatch = next(t for t in self.tasks if t.get_name() == "dispatch")
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(dispatch), self.service.settings.dispatch.grace.total_seconds())
        self.exited.set()
        # the callback server stops listening and finishes the pushes it has begun (their
        # receipts are written and acknowledged) before anything is cancelled
        callbacks = next(t for t in self.tasks if t.get_name() == "callbacks")
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(callbacks), CALLBACK_GRACE.total_seconds() + 1)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # the pushes of the last minute; the database may be the reason we stop
            self.push_tally.flush(self.service.engine)
        for dispatcher in (*self.retired, self.dispatcher):
            await dispatcher.aclose()
        self.service.engine.dispose()
        log.info("daemon.stopped")
        return 0

    # -- side tasks ------------------------------------------------------------------------------
    async def _every(self, interval: timedelta, work: Callable[[], Awaitable[Any]],
                     until: asyncio.Event | None = None) -> None:
        until = until or self.stop_event
        while not until.is_set():
            await self._survive(work)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), interval.total_seconds())

    async def _dispatch_forever(self) -> None:
        idle = min(1.0, self.service.settings.poll_interval.total_seconds())
        while self.dispatcher.claiming:
            claimed = await self._survive(lambda: self._dispatch_all())
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), idle)

    async def _serve_callbacks(self) -> None:
        """The vendors' push callbacks on `http.listen` (uvicorn), until the daemon exits."""
        listen = self.service.settings.http.listen
        if listen is None:
            await self.exited.wait()
            return
        from engine.run.callbacks import build_app, log_push_routes
        from engine.run.http_server import http_server, raise_open_files_limit
        from engine.run.receipts import ReceiptBook

        channels = self.service.settings.channels
        book = ReceiptBook(self.service.engine, self.service.settings.sms_unsubscribe)
        log_push_routes(channels)
        raise_open_files_limit()
        server = http_server(build_app(book, channels, self.push_tally), listen, grace=CALLBACK_GRACE)

        async def serve() -> None:
            with contextlib.suppress(SystemExit):  # uvicorn exits the process when it cannot bind
                await server.serve()

        serving = asyncio.create_task(serve())
        while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn sets a plain flag
            await asyncio.sleep(0.02)
        if server.started:
            bound = [sock.getsockname() for srv in server.servers for sock in srv.sockets]
            log.info("callbacks.listening", listen=listen, bound=[f"{a[0]}:{a[1]}" for a in bound])
        exited = asyncio.create_task(self.exited.wait())
        await asyncio.wait([serving, exited], return_when=asyncio.FIRST_COMPLETED)
        if serving.done():  # uvicorn could not listen (it exits on a bind error)
            exited.cancel()
            raise SiyuError(f"cannot serve callbacks on {listen} (http.listen): is the port taken?")
        server.should_exit = True
        await serving

    async def _flush_push_counts(self) -> None:
        await asyncio.to_thread(self.push_tally.flush, self.service.engine)

    async def _pull_receipts(self) -> None:
        counts = await self.service.pull_receipts(self.clock())
        if any(counts.values()):
            log.info("receipts.pulled", **counts)

    async def _dispatch_all(self) -> int:
        return sum(await asyncio.gather(*(self.dispatcher.dispatch_once(name) for name in self.service.channels)))

    async def _survive(self, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run one iteration of a side task; a transient database error (deadlock, lost connection,
        busy SQLite) is logged and retried next time. Anything else kills the task, and the daemon."""
        try:
            return await work()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("daemon.transient_error", error=summarise(exc))
            return 0

    async def _ping(self) -> None:
        self.notifier.watchdog()

    async def _round(self) -> None:
        """Decide everything due now, in priority order: occurrences in (now − misfire_grace, now]
        that have not finished, and events past the watermark."""
        async with self.work_lock:
            await asyncio.to_thread(self.service.decide, self.clock(), None, self.clock)
        self.notifier.status(self._status())

    async def _fire(self, playbook_id: str) -> None:
        log.info("schedule.fired", playbook=playbook_id)
        await self._round()

    # -- scheduling and reload -------------------------------------------------------------------------
    def _schedule(self) -> None:
        from engine.decide.preview import playbook_zone

        self.scheduler.remove_all_jobs()
        for playbook in self.service.playbooks:
            if playbook.enabled and playbook.trigger.cron is not None:
                tz = playbook_zone(playbook, self.service.settings.timezone)
                self.scheduler.add_job(self._fire, PosixCronTrigger(playbook.trigger.cron, tz), args=[playbook.id],
                                       id=playbook.id, coalesce=True, max_instances=1,
                                       misfire_grace_time=int(self.service.settings.misfire_grace_td.total_seconds()))

    def _log_lint(self) -> None:
        """`siyu check`'s warnings, logged: they never stop the daemon or block a reload."""
        for problem in self.service.lint():
            log.warning("playbook.warning", problem=str(problem))

    async def _reload(self) -> None:
        """SIGHUP: build and validate a whole new config and playbook set, then swap; or keep the old."""
        try:
            fresh = await asyncio.to_thread(Service.load, self.config_path, True, True)
        except SiyuError as exc:
            for line in str(exc).splitlines():
                log.error("reload.rejected", problem=line)
            log.warning("reload.kept_old_set", playbooks=len(self.service.playbooks))
            return
        async with self.work_lock:
            old, replaced = self.service, self.dispatcher
            self.service = fresh
            self.dispatcher = fresh.dispatcher(self.clock) if self._channels_changed(old, fresh) else self.dispatcher
            self.dispatcher.contact = fresh.contact  # the next claim checks the new policies
            self._schedule()
        if replaced is not self.dispatcher:
            # its sends in flight keep their connections until they end; closed again at shutdown,
            # in case a batch it had begun to claim opened them again
            await replaced.aclose()
            self.retired.append(replaced)
        log.info("reload.done", playbooks=len(fresh.playbooks))
        self._log_lint()
        self.data_check = asyncio.create_task(self._check_data(fresh))
        self.notifier.status(self._status())

    @staticmethod
    async def _check_data(service: Service) -> None:
        """`siyu check --db` on the running set, beside the work: each finding is logged, none stops anything."""
        try:
            found = await asyncio.to_thread(check_data, service.engine, service.loaded, service.settings.links)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run must not stop the daemon
            log.warning("data_check.failed", error=summarise(exc))
            return
        for problem in found:
            (log.warning if problem.is_warning else log.error)("data_check.finding", problem=str(problem))

    @staticmethod
    def _channels_changed(old: Service, new: Service) -> bool:
        return old.settings.channels != new.settings.channels or old.settings.dispatch != new.settings.dispatch

    def _status(self) -> str:
        scheduled = sum(1 for p in self.service.playbooks if p.enabled and p.trigger.cron is not None)
        events = sum(1 for p in self.service.playbooks if p.enabled and p.is_event_triggered)
        sent = self.dispatcher.counts.get("sent", 0)
        return f"{scheduled} scheduled and {events} event playbooks; {sent} sent since start"

    def _install_signals(self) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_event.set)

        def restore() -> None:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return restore

