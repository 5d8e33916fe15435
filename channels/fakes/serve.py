"""`siyu fakes`: the fake vendors of channels/fakes/ on loopback ports, for a local trial with the
vendors' real protocols and no vendor account.

This module serves them until SIGINT or SIGTERM, plays the world behind them every second (carriers deliver SMS,
staff members confirm WeCom tasks, the robot finishes its calls) and can write a complete
config that points every channel at them.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import IO, Any

import yaml
from rich.console import Console
from rich.table import Table

from channels.fakes.local import LocalVendors
from engine.errors import SiyuError

ROOT = Path(__file__).resolve().parents[2]  # a source checkout (the wheel case: see the packaging issue)
WHAT = {
    "aliyun_sms": "Aliyun SMS: SendSms, QuerySendDetails (V2 signature)",
    "tencent_sms": "Tencent Cloud SMS: SendSms, pulls (TC3 signature)",
    "wecom": "WeCom customer contact: gettoken, add_msg_template, results",
    "wechat": "WeChat official account: stable_token, template/send",
    "aliyun_outbound_bot": "Aliyun outbound robot: AssignJobs, QueryJobsWithResult",
    "aliyun_voice": "Aliyun voice: SingleCallByTts, QueryCallDetailByCallId",
}


def local_vendors(port: int) -> LocalVendors:
    """Every fake vendor (channels/fakes/local.py) on ports port+1 … port+6, not started."""
    return LocalVendors(port=port)


def trial_config(vendors: Any, database: str) -> str:
    """A complete config for a local trial: the demo database, the bundled playbooks, every channel
    on its fake, the callbacks on 127.0.0.1:8080."""
    links: dict[str, str] = {}
    example = ROOT / "config.example.yaml"
    if example.is_file():
        links = (yaml.safe_load(example.read_text(encoding="utf-8")) or {}).get("links") or {}
    config = {"database": {"url": database}, "playbooks": str(ROOT / "playbooks"), "links": links,
              "channels": vendors.channels(), "http": {"listen": "127.0.0.1:8080"},
              "log": {"format": "console", "level": "info"}, "poll_interval": "10s"}
    header = ("# Written by `siyu fakes`: a local trial. Every channel points at a fake vendor on\n"
              "# 127.0.0.1 (their credentials are the fakes' own, not secrets); policies take their defaults.\n")
    return header + yaml.safe_dump(config, allow_unicode=True, sort_keys=False, width=120)


def serve(port: int, database: str, write_config: str | None, out: IO[str]) -> int:
    """Serve the fakes until SIGINT/SIGTERM; 0 on a clean stop."""
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
            Path(write_config).write_text(trial_config(vendors, database), encoding="utf-8")
            console.print(f"config for them written to {write_config}: siyu tick/run --config {write_config}")
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
