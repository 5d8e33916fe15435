"""`siyu fakes`: the fake vendors of channels/fakes/ on loopback ports, for a local trial with the
vendors' real protocols and no vendor account.

This module serves them until SIGINT or SIGTERM, plays the world behind them every second (carriers deliver SMS,
staff members confirm WeCom tasks, the robot finishes its calls) and can write a complete
config that points every channel at them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import string
import threading
from pathlib import Path
from typing import IO, Any

import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from channels.fakes.local import LocalVendors
from engine.errors import SiyuError

WHAT = {
    "aliyun_sms": "Aliyun SMS: SendSms, QuerySendDetails (V2 signature)",
    "tencent_sms": "Tencent Cloud SMS: SendSms, pulls (TC3 signature)",
    "wecom": "WeCom customer contact: gettoken, add_msg_template, results",
    "wechat": "WeChat official account: stable_token, template/send",
    "aliyun_outbound_bot": "Aliyun outbound robot: AssignJobs, QueryJobsWithResult",
    "aliyun_voice": "Aliyun voice: SingleCallByTts, QueryCallDetailByCallId",
}


def local_vendors(port: int) -> LocalVendors:
    """Every fake vendor (channels/fakes/local.py) on ports port+1 … port+6, not started, with a
    push secret and a WeChat AES key made for this run."""
    key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(43))
    return LocalVendors(port=port, callback_secret=secrets.token_urlsafe(32), encoding_aes_key=key)


TRIAL_MISFIRE_GRACE = "2h"
"""The trial's `misfire_grace`: `siyu tick --at "<today> 11:00"` (README, "A local trial") then decides
everything due in (09:00, 11:00], the playbooks at 10:00 and 10:30 as well as the one at 11:00."""


def trial_config(vendors: Any, database: str, playbooks: Path, links: dict[str, str]) -> str:
    """A complete config for a local trial: the database, the playbooks at `playbooks`, every channel
    on its fake, the callbacks on 127.0.0.1:8080."""
    config = {"allow_literal_secrets": True,  # the fakes' own credentials, written in the file
              "database": {"url": database}, "playbooks": str(playbooks), "links": links,
              "channels": vendors.channels(), "http": {"listen": "127.0.0.1:8080"},
              "log": {"format": "console", "level": "info"}, "poll_interval": "10s",
              "misfire_grace": TRIAL_MISFIRE_GRACE}
    header = ("# Written by `siyu fakes`: a local trial. Every channel points at a fake vendor on\n"
              "# 127.0.0.1 (their credentials are the fakes' own, not secrets); policies take their defaults.\n"
              f"# misfire_grace {TRIAL_MISFIRE_GRACE}: a tick at 11:00 decides what was due since 09:00.\n")
    return header + yaml.safe_dump(config, allow_unicode=True, sort_keys=False, width=120)


def absolute_database(database: str) -> str:
    """A SQLite URL with a relative file made absolute (from the working directory), so that the
    written config opens the same file wherever it is run; other URLs as given."""
    url = make_url(database)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" \
            or url.database.startswith("file:") or Path(url.database).is_absolute():
        return database
    return url.set(database=str(Path(url.database).resolve())).render_as_string(hide_password=False)


def write_trial(path: Path, vendors: Any, database: str, examples: Path) -> list[str]:
    """Write the trial config at `path`, with the example playbooks copied into a `playbooks/` folder
    beside it (an existing folder is left as it is, and read); what was done, for people."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.parent.resolve() / "playbooks"
    if target.exists():
        done = [f"{target} already exists: left as it is, and the config reads its playbooks"]
    else:
        shutil.copytree(examples / "playbooks", target)
        done = [f"the example playbooks copied to {target}"]
    example = yaml.safe_load((examples / "config.example.yaml").read_text(encoding="utf-8")) or {}
    links = {str(k): str(v) for k, v in (example.get("links") or {}).items()}
    with open(path, "w", encoding="utf-8", opener=lambda name, flags: os.open(name, flags, 0o600)) as config:
        config.write(trial_config(vendors, absolute_database(database), target, links))  # a new file is 0600
    return [*done, f"config for them written to {path}: siyu tick/run --config {path}"]


def serve(port: int, database: str, write_config: str | None, out: IO[str], examples: Path) -> int:
    """Serve the fakes until SIGINT/SIGTERM; 0 on a clean stop. `examples` holds the example
    `playbooks/` and `config.example.yaml` that a written config copies and takes its links from."""
    vendors = local_vendors(port)
    try:
        vendors.start()
    except (OSError, RuntimeError, SystemExit) as exc:  # uvicorn exits when a port is taken
        vendors.stop()
        raise SiyuError(f"cannot serve the fakes on 127.0.0.1:{port + 1}–{port + 6} ({exc}); "
                        "choose other ports with --port") from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        console = Console(file=out)
        table = Table(title="fake vendors (127.0.0.1 only)")
        for column in ("vendor", "url", "speaks"):
            table.add_column(column)
        for name, server in vendors.servers.items():
            table.add_row(name, server.url, WHAT[name])
        console.print(table)
        if write_config:
            for line in write_trial(Path(write_config), vendors, database, examples):
                console.print(line)
        console.print("carriers deliver SMS, staff confirm WeCom tasks and the robot finishes calls "
                      f"{vendors.deliver_after.total_seconds():.0f}s after they are sent; Ctrl-C stops")
        out.flush()
        while not stop.wait(1.0):
            done = vendors.settle()
            if any(done.values()):
                console.print(" ".join(f"{k} {v}" for k, v in done.items() if v))
                out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        vendors.stop()
    return 0
