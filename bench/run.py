"""The benchmark: audiences at 10k / 100k / 1M members on SQLite and PostgreSQL, side by side with
what users would do instead; dispatch throughput; the daemon's own scale.

    uv run --group bench python -m bench.run --members 10000,100000,1000000 --db sqlite,postgres \\
        --json bench/results/latest.json --plot bench/results/audience.png

For each database and size it makes sure the demo brand is there (generated once, reused; the
demo's "today" is fixed so runs compare), exports the tables to Parquet for DuckDB, then for
each playbook runs every approach in its own process (`python -m bench.audience`) and `siyu dry-run
--format jsonl > /dev/null` as users run it. Before anything is reported, the audiences of
Siyu, the hand-written SQL, pandas and DuckDB must be the same member ids in the same order, and
the loop's matches must be among them: a mismatch stops the run (exit 1) — it is a bug.

Rows (`--json`): approach, playbook, db, members, seconds, peak_rss_mb, rows, and extras.
Nothing here asserts a time: the table and the ratios are for people to read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from bench.audience import PLAYBOOKS, playbook_path
from bench.measure import DATA, ROOT, Row, database_url, machine, row, run_child, siyu_argv

TODAY = date(2026, 11, 16)
"""The demo's fixed 'today' (a Monday): the same data every run, on every machine."""
AT = datetime.combine(TODAY, time(10, 0), tzinfo=ZoneInfo("Asia/Shanghai"))
APPROACHES = ("siyu", "sql", "pandas", "duckdb", "loop")
COMPARED = ("sql", "pandas", "duckdb")
console = Console(stderr=True)


class Mismatch(Exception):
    """Two approaches disagree about an audience."""


def ensure_data(db: str, members: int) -> str:
    from engine.store.connect import open_engine, upgrade
    from engine.store.demo import DemoSpec, ensure_demo

    url = database_url(db, members)
    engine = open_engine(url)
    upgrade(engine)
    console.print(f"[bold]{db}, {members:,} members[/]: the demo brand …")
    created = ensure_demo(engine, DemoSpec(members=members, today=TODAY, tz=AT.tzinfo), progress=True)  # type: ignore[arg-type]
    engine.dispose()
    console.print("  generated" if created else "  reused")
    return url


def audience_child(approach: str, playbook: str, url: str, ids: Path, *extra: str) -> tuple[dict[str, Any], Any]:
    out = ids.with_suffix(".json")
    with out.open("wb") as stdout:
        measured = run_child([sys.executable, "-m", "bench.audience", approach, playbook,
                              "--db", url, "--at", AT.isoformat(), "--ids", str(ids), *extra], stdout=stdout)
    if measured.returncode != 0:
        raise SystemExit(f"{approach} {playbook} failed:\n{measured.stderr}")
    return json.loads(out.read_text()), measured


def measure_audiences(db: str, members: int, url: str, playbooks: Iterable[str], approaches: Iterable[str],
                      sample_every: int) -> list[Row]:
    wanted = set(approaches)
    rows: list[Row] = []
    work = DATA / f"ids-{db}-{members}"
    work.mkdir(parents=True, exist_ok=True)
    parquet = DATA / f"parquet-{db}-{members}"
    if "duckdb" in wanted:
        console.print("  Parquet export for DuckDB …")
        with (work / "export.json").open("wb") as stdout:
            exported = run_child([sys.executable, "-m", "bench.audience", "export", "--db", url,
                                  "--parquet", str(parquet)], stdout=stdout)
        if exported.returncode != 0:
            raise SystemExit(f"Parquet export failed:\n{exported.stderr}")
        rows.append(row("parquet export", "-", db, members, exported.seconds, exported.peak_rss_mb,
                        json.loads((work / "export.json").read_text())["rows"]))
    for playbook in playbooks:
        console.print(f"  {playbook} …")
        reference, _ = audience_child("siyu-ids", playbook, url, work / f"{playbook}.siyu-ids")
        expected = (work / f"{playbook}.siyu-ids").read_text().splitlines()
        if "siyu" in wanted:
            dry = run_child(siyu_argv("dry-run", str(playbook_path(playbook)), "--db", url, "--at", AT.isoformat(),
                                      "--format", "jsonl", "--config", str(ROOT / "config.example.yaml"),
                                      "--out", "/dev/null"))
            if dry.returncode != 0:
                raise SystemExit(f"siyu dry-run {playbook} failed:\n{dry.stderr}")
            rows.append(row("siyu", playbook, db, members, dry.seconds, dry.peak_rss_mb, len(expected),
                            query_seconds=round(reference["seconds"], 4)))
        for approach in (a for a in COMPARED if a in wanted):
            extra = ("--parquet", str(parquet)) if approach == "duckdb" else ()
            result, measured = audience_child(approach, playbook, url, work / f"{playbook}.{approach}", *extra)
            got = (work / f"{playbook}.{approach}").read_text().splitlines()
            if got != expected:
                raise Mismatch(f"{db} {members:,} {playbook}: {approach} found {len(got):,} members, Siyu "
                               f"{len(expected):,}; first difference: {_first_difference(expected, got)}")
            rows.append(row(approach, playbook, db, members, result["seconds"], measured.peak_rss_mb, len(got),
                            process_seconds=round(measured.seconds, 4)))
        if "loop" in wanted:
            result, measured = audience_child("loop", playbook, url, work / f"{playbook}.loop",
                                              "--sample-every", str(sample_every))
            got = set((work / f"{playbook}.loop").read_text().splitlines())
            if not got <= set(expected):
                raise Mismatch(f"{db} {members:,} {playbook}: the loop matched {sorted(got - set(expected))[:3]}, "
                               "which Siyu's audience does not hold")
            scale = members / max(1, result["sample"])
            rows.append(row("loop", playbook, db, members, result["seconds"] * scale, measured.peak_rss_mb,
                            round(result["rows"] * scale), extrapolated=True, sample=result["sample"],
                            sample_seconds=round(result["seconds"], 4)))
    return rows


def _first_difference(expected: list[str], got: list[str]) -> str:
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        return f"missing {missing[:3]}, extra {extra[:3]}"
    return "same members, different order"


# -- report -----------------------------------------------------------------------------------------

def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}×"


def by_measurement(rows: list[Row]) -> list[tuple[tuple[str, int, str], dict[str, Row]]]:
    """The audience rows grouped per (db, members, playbook), each group keyed by approach."""
    grouped: dict[tuple[str, int, str], dict[str, Row]] = defaultdict(dict)
    for r in rows:
        if r["approach"] in APPROACHES:
            grouped[(r["db"], r["members"], r["playbook"])][r["approach"]] = r
    return sorted(grouped.items())


def audience_table(rows: list[Row]) -> Table:
    table = Table(title="audiences: seconds, and ratios (loop: extrapolated from its sample)")
    for name, justify in (("db", "left"), ("members", "right"), ("playbook", "left"), ("audience", "right"),
                          ("siyu s", "right"), ("sql s", "right"), ("pandas s", "right"), ("duckdb s", "right"),
                          ("loop s", "right"), ("siyu/sql", "right"), ("pandas/siyu", "right"),
                          ("duckdb/siyu", "right"), ("loop/siyu", "right"), ("siyu rows/s", "right"),
                          ("siyu MB", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for (db, members, playbook), by in by_measurement(rows):
        s = {a: by[a]["seconds"] if a in by else None for a in APPROACHES}
        siyu = by.get("siyu")
        audience = siyu["rows"] if siyu else next(iter(by.values()))["rows"]
        table.add_row(db, f"{members:,}", playbook, f"{audience:,}",
                      *(f"{s[a]:.2f}" if s[a] is not None else "-" for a in APPROACHES),
                      _ratio(s["siyu"], s["sql"]), _ratio(s["pandas"], s["siyu"]), _ratio(s["duckdb"], s["siyu"]),
                      _ratio(s["loop"], s["siyu"]),
                      f"{audience / s['siyu']:,.0f}" if s["siyu"] else "-",
                      f"{siyu['peak_rss_mb']:.0f}" if siyu else "-")
    return table


def other_table(rows: list[Row]) -> Table:
    table = Table(title="everything else")
    for name in ("approach", "playbook", "db", "members", "seconds", "peak MB", "rows", "notes"):
        table.add_column(name, justify="right" if name in ("members", "seconds", "peak MB", "rows") else "left")
    for r in rows:
        if r["approach"] in APPROACHES:
            continue
        notes = ", ".join(f"{k}={v}" for k, v in r.items()
                          if k not in ("approach", "playbook", "db", "members", "seconds", "peak_rss_mb", "rows"))
        table.add_row(r["approach"], r["playbook"], r["db"], f"{r['members']:,}", f"{r['seconds']:.2f}",
                      "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}",
                      "-" if r["rows"] is None else f"{r['rows']:,}", notes)
    return table


def markdown(rows: list[Row]) -> str:
    """The audience table as Markdown, for README.md."""
    head = ("db", "members", "playbook", "audience", "Siyu s", "hand SQL s", "pandas s", "DuckDB s",
            "loop s (extrapolated)", "Siyu / SQL", "pandas / Siyu", "loop / Siyu", "Siyu peak MB")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i > 2 else "---" for i in range(len(head))) + "|"]
    for (db, members, playbook), by in by_measurement(rows):
        s = {a: by[a]["seconds"] if a in by else None for a in APPROACHES}
        audience = next(iter(by.values()))["rows"] if "siyu" not in by else by["siyu"]["rows"]
        cells = [db, f"{members:,}", playbook, f"{audience:,}",
                 *(f"{s[a]:.2f}" if s[a] is not None else "–" for a in APPROACHES),
                 _ratio(s["siyu"], s["sql"]), _ratio(s["pandas"], s["siyu"]), _ratio(s["loop"], s["siyu"]),
                 f"{by['siyu']['peak_rss_mb']:.0f}" if "siyu" in by else "–"]
        lines.append("| " + " | ".join(c.replace("-", "–") if c == "-" else c for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    """Time against members, log-log: one panel per database, one line per approach (the sum over
    the bundled example playbooks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dbs = sorted({r["db"] for r in rows if r["approach"] in APPROACHES})
    fig, axes = plt.subplots(1, len(dbs), figsize=(6 * len(dbs), 4.5), squeeze=False)
    for ax, db in zip(axes[0], dbs, strict=True):
        for approach in APPROACHES:
            totals: dict[int, float] = defaultdict(float)
            for r in rows:
                if r["db"] == db and r["approach"] == approach and r["playbook"] != "broad-sms":
                    totals[r["members"]] += r["seconds"]
            if totals:
                xs = sorted(totals)
                label = approach + (" (extrapolated)" if approach == "loop" else "")
                ax.plot(xs, [totals[x] for x in xs], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("members")
        ax.set_ylabel("seconds, six example playbooks")
        ax.set_title(db)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", default="10000,100000,1000000", help="demo sizes, comma-separated")
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres, or both")
    parser.add_argument("--playbooks", default=",".join(PLAYBOOKS), help="playbook ids (bundled + bench/playbooks)")
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--sample-every", type=int, default=100, help="the loop judges every Nth member (1%%)")
    parser.add_argument("--dispatch", type=int, default=0, metavar="N",
                        help="also send N queued touches through Aliyun SMS and WeCom (bench.dispatch)")
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="also check and idle the daemon with N playbooks (bench.daemon_scale)")
    parser.add_argument("--json", type=Path, help="write every measured row here")
    parser.add_argument("--plot", type=Path, help="write the time-against-members plot (PNG) here")
    parser.add_argument("--markdown", type=Path, help="write the audience table as Markdown here (for README.md)")
    parser.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: print the tables (and --plot, --json) of earlier runs' files; "
                             "a later file's row replaces an earlier one's for the same measurement")
    args = parser.parse_args(argv)
    if args.report:
        return report(combined(args.report), args.json, args.plot, args.markdown)
    sizes = [int(n) for n in args.members.split(",") if n]
    dbs = [d for d in args.db.split(",") if d]
    playbooks = [p for p in args.playbooks.split(",") if p]
    approaches = [a for a in args.approaches.split(",") if a]

    rows: list[Row] = []
    try:
        for db in dbs:
            for members in sizes:
                url = ensure_data(db, members)
                rows += measure_audiences(db, members, url, playbooks, approaches, args.sample_every)
    except Mismatch as exc:
        console.print(f"[red]audiences differ[/]: {exc}")
        return 1
    if args.dispatch:
        from bench import dispatch

        for db in dbs:
            for channel in ("sms", "wecom"):
                rows += dispatch.measure(db, args.dispatch, channel)
    if args.scale:
        from bench import daemon_scale

        for db in dbs:
            rows += daemon_scale.measure(db, args.scale)

    return report(rows, args.json, args.plot, args.markdown)


def combined(paths: Iterable[Path]) -> list[Row]:
    """The rows of several runs' JSON files; a later file's row replaces an earlier one's for the
    same (approach, playbook, db, members)."""
    by_key: dict[tuple[Any, ...], Row] = {}
    for path in paths:
        for r in json.loads(path.read_text(encoding="utf-8"))["rows"]:
            by_key[(r["approach"], r["playbook"], r["db"], r["members"])] = r
    return list(by_key.values())


def report(rows: list[Row], json_path: Path | None, plot_path: Path | None, markdown_path: Path | None = None) -> int:
    out = Console(width=220)
    out.print(audience_table(rows))
    out.print(other_table(rows))
    out.print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"machine": machine(), "rows": rows}, ensure_ascii=False, indent=1) + "\n",
                             encoding="utf-8")
    if plot_path:
        plot(rows, plot_path)
    if markdown_path:
        markdown_path.write_text(markdown(rows), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
