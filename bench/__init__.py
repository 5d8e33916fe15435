"""Benchmarks run by hand, never by the test suite: `uv run --group bench python -m bench.run --help`.

`bench.run` measures audiences (with `bench.audience` in a child process per approach), dispatch
throughput (`bench.dispatch`, against `bench.fake_vendor`) and the daemon at scale
(`bench.daemon_scale`); `bench.measure` holds what they share. Every module imports the others as
`bench.<module>` and every child process is started as `python -m bench.<module>`.
"""

from __future__ import annotations
