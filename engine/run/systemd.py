"""sd_notify over NOTIFY_SOCKET: READY=1, WATCHDOG=1, STATUS=…, STOPPING=1.

Without NOTIFY_SOCKET (not under systemd) every call is a no-op. The watchdog interval
comes from WATCHDOG_USEC; the daemon pings at half of it from its main loop.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends systemd notifications; silent when not under systemd."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address = None if not address else ("\0" + address[1:] if address.startswith("@") else address)
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_seconds = int(usec) / 1_000_000 if usec and usec.isdigit() else None

    def notify(self, *lines: str) -> bool:
        if self.address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
            except OSError:
                return False
        return True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    @property
    def ping_every(self) -> float:
        """Seconds between WATCHDOG=1 pings: half of WatchdogSec, at most 10 s."""
        return min(10.0, self.watchdog_seconds / 2) if self.watchdog_seconds else 10.0
