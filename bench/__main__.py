"""`make bench`: the send path, broadcasts, scheduling, signup, import and start-up, each
against its baseline.

    python -m bench [--only send,broadcast,schedule,signup,import,startup,dkim,sunset] [--runs 3] [--quick]

Prints a table per benchmark and writes bench/results/latest.json. Everything it starts
(databases, Redis databases, the SMTP sink, workers, servers) it stops again.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench.services import ROOT, Unavailable
from bench.stats import table

RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ("send", "broadcast", "schedule", "signup", "import", "startup", "dkim", "sunset")
#: Sizes for --quick: a check that the harness works, not a measurement.
QUICK = {
    "send": {"n": 2_000},
    "broadcast": {"sizes": (500, 2_000)},
    "schedule": {"total": 20_000, "due": 2_000, "sqlite_total": 10_000, "sqlite_due": 1_000},
    "signup": {"seconds": 3},
    "import": {"n": 5_000, "runs": 1},
    "startup": {"repeat": 3},
    "dkim": {"n": 50, "send_n": 200},
    "sunset": {"n": 20_000, "sqlite_n": 5_000, "runs": 1},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help="comma-separated: " + ", ".join(BENCHMARKS))  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="runs of each (the median is kept)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark: {', '.join(sorted(unknown))}")
    if "signup" in chosen and shutil.which("wrk") is None:
        print("bench: the signup benchmark needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2

    results: dict[str, Any] = {"machine": _machine(), "runs": args.runs, "quick": args.quick}
    started = time.perf_counter()
    for name in chosen:
        print(f"\n== {name} ==", flush=True)
        sizes = QUICK[name] if args.quick else {}
        try:
            results[name] = _run(name, args.runs, sizes)
        except Unavailable as e:
            print(f"bench: {name} needs a service that does not answer: {e}", file=sys.stderr)
            return 2
        print(REPORTS[name](results[name]), flush=True)
    results["seconds"] = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\n{len(chosen)} benchmarks in {results['seconds'] / 60:.1f} min; results in "
          f"{out.relative_to(ROOT)}")  # fmt: skip
    return 0


def _run(name: str, runs: int, sizes: dict[str, Any]) -> dict[str, Any]:
    log = _progress
    if name == "send":
        from bench import send

        return send.run(runs=runs, log=log, **sizes)
    if name == "broadcast":
        from bench import broadcast

        return broadcast.run(runs=runs, log=log, **sizes)
    if name == "schedule":
        from bench import schedule

        found = schedule.run(runs=runs, log=log, **sizes)
        # The headline numbers are PostgreSQL's; SQLite's are beside them.
        pg = found["postgresql"]
        return {k: pg[k] for k in ("rows", "seconds", "rows_per_s", "rss_mb")} | found
    if name == "import":
        from bench import importing

        return importing.run(**{"runs": runs, "log": log, **sizes})
    if name == "sunset":
        from bench import sunset

        return sunset.run(**{"runs": runs, "log": log, **sizes})
    if name == "dkim":
        from bench import dkim

        return dkim.run(runs=runs, log=log, **sizes)
    if name == "startup":
        from bench import startup

        return startup.run(runs=runs, log=log, **sizes)
    from bench import signup

    return signup.run(runs=runs, log=log, **sizes)


def _progress(*parts: object, end: str = "\n") -> None:
    print(*parts, end=end, flush=True)


def _machine() -> dict[str, Any]:
    import os

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip


def _send_report(r: dict[str, Any]) -> str:
    rows = [
        ["raw smtplib (baseline)", r["baseline_per_s"], 1.0, "", ""],
        ["nurture", r["emails_per_s"], r["ratio"], r["worker_cpu_us_per_email"], r["rss_mb"]],
    ]
    stages = r["cpu_us_per_email"]
    title = (f"send path: {r['n']:,} emails, {r['workers']}, {r['smtp_connections']} SMTP "
             f"connections, {r['message_bytes']:,} bytes each (medians of {len(r['runs']['nurture'])} runs)")  # fmt: skip
    main = table(title, ["", "emails/s", "ratio", "worker CPU µs/email", "worker RSS MB"], rows)
    split = table(
        "worker CPU per email by stage (µs)",
        ["render", "build", "smtp", "database", "queue", "postgres"],
        [
            [
                stages["render"],
                stages["build"],
                stages["smtp"],
                stages["database"],
                stages["queue"],
                r["postgres_cpu_us_per_email"],
            ]
        ],  # fmt: skip
    )
    return f"{main}\n{split}\n{met('send path', r['ratio'], SEND_TARGET)}; worker RSS < 150 MB"


#: The send path's same-run ratio to reach, against raw smtplib with as many connections.
SEND_TARGET = 0.6


def met(what: str, ratio: float, target: float) -> str:
    return (
        f"target: {what} ratio >= {target}: {ratio:.2f}, {'met' if ratio >= target else 'not met'}"
    )


def _broadcast_report(r: dict[str, Any]) -> str:
    names = {"embedded": "embedded (SQLite, in-process)",
             "distributed": "distributed (PostgreSQL, Redis, 2x2 workers)"}  # fmt: skip
    rows = [[names[x["mode"]], x["readers"], x["connections"], x["baseline_per_s"],
             x["emails_per_s"], x["ratio"], x["target"], "met" if x["met"] else "not met"]
            for x in r["rows"]]  # fmt: skip
    first = r["rows"][0]
    title = (f"broadcast: one issue of {r['message_bytes']:,} bytes to every reader "
             f"({first['readers']:,}: medians of {first['runs']} runs; larger: one run)")  # fmt: skip
    header = ["", "readers", "SMTP conns", "raw smtplib/s", "nurture/s", "ratio", "target", ""]
    lines = [table(title, header, rows)]
    for x in r["rows"]:
        if x["cpu_us_per_email"]:
            lines.append(f"{names[x['mode']]}, {x['readers']:,}: "
                         f"{x['cpu_us_per_email']:,.0f} µs of CPU per email in the process")  # fmt: skip
    return "\n".join(lines)


def _schedule_report(r: dict[str, Any]) -> str:
    rows = []
    for db in ("postgresql", "sqlite"):
        if db not in r:
            continue
        d = r[db]
        rows.append([f"{db}: bare INSERT … SELECT + Redis pipeline", d["table_rows"], d["rows"],
                     d["baseline_seconds"], d["baseline_rows_per_s"], 1.0, ""])  # fmt: skip
        rows.append([f"{db}: nurture send-due", d["table_rows"], d["rows"], d["seconds"],
                     d["rows_per_s"], d["ratio"], d["rss_mb"]])  # fmt: skip
    main = table("scheduling: due steps claimed, written and enqueued (medians)",
                 ["", "table rows", "due", "seconds", "rows/s", "ratio", "RSS MB"], rows)  # fmt: skip
    pg = r.get("postgresql", {})
    lines = [main]
    if "small_table_rss_mb" in pg:
        lines.append(f"send-due peak RSS: {pg['small_table_rss_mb']:.0f} MB with "
                     f"{pg['small_table_rows']:,} rows, {pg['rss_mb']:.0f} MB with "
                     f"{pg['table_rows']:,}")  # fmt: skip
    for plan in pg.get("explain", []):
        lines.append(f"EXPLAIN {plan['sql'][:70]}…: {', '.join(plan['scans'])}")
    lines.append("target: 100,000 due in < 10 s on PostgreSQL with 1M rows; RSS flat")
    return "\n".join(lines)


def _signup_report(r: dict[str, Any]) -> str:
    rows = [
        ["GET /healthz (baseline)", r["baseline_rps"], r.get("baseline_p99_ms", ""), 1.0],
        ["POST /subscribe", r["rps"], r["p99_ms"], r["rps"] / r["baseline_rps"]],
    ]
    title = f"signup under wrk ({r.get('load', 'loopback')}; medians)"
    return (table(title, ["", "requests/s", "p99 ms", "ratio"], rows)
            + "\ntarget: >= 500 requests/s, p99 < 50 ms")  # fmt: skip


def _import_report(r: dict[str, Any]) -> str:
    rows = []
    for db, bare in (("postgresql", "COPY"), ("sqlite", "executemany")):
        d = r[db]
        rows.append([f"{db}: bare {bare}", d["rows"], d["baseline_seconds"],
                     d["baseline_rows_per_s"], 1.0])  # fmt: skip
        rows.append([f"{db}: nurture subscribers import --confirmed", d["rows"], d["seconds"],
                     d["rows_per_s"], d["ratio"]])  # fmt: skip
    main = table("import: CSV rows with 3 declared fields, enrolled (medians)",
                 ["", "rows", "seconds", "rows/s", "ratio"], rows)  # fmt: skip
    return f"{main}\ntarget: ratio >= 0.3; 100,000 rows in < 30 s on PostgreSQL"


def _startup_report(r: dict[str, Any]) -> str:
    rows = [[name, r[name]["wall_s"], r[name]["cpu_s"], r[name]["wall_ratio"],
             r[name]["over_python_s"]]
            for name in ("python -c pass", "nurture --help", "nurture validate")]  # fmt: skip
    title = f"start-up: a fresh process each time (medians of {r['repeat']})"
    return (table(title, ["", "wall s", "CPU s", "× python", "over python s"], rows)
            + f"\ntarget: nurture --help and nurture validate < {r['target_seconds']} s")  # fmt: skip


def _dkim_report(r: dict[str, Any]) -> str:
    s = r["send"]
    per_s, cpu, build = s["emails_per_s"], s["worker_cpu_us"], s["build_us"]
    names = {"unsigned": "unsigned (baseline)", "signed": "signed: dkimpy + OpenSSL RSA (now)",
             "dkimpy": "signed: dkimpy's dkim.sign, pure-Python RSA (before)"}  # fmt: skip
    ratios = {"unsigned": 1.0, "signed": s["ratio"], "dkimpy": s["dkimpy_ratio"]}
    send = table(
        f"DKIM on the send path: {s['n']:,} emails per side end to end, {s['workers']}, "
        f"2048-bit RSA (medians of {len(s['runs']['unsigned'])} runs; ratios within each run)",
        ["", "emails/s", "ratio", "worker CPU µs/email", "build + sign CPU µs/email"],
        [[names[k], per_s[k], ratios[k], cpu[k], build[k]] for k in names],
    )
    us = r["us_per_email"]
    rows = [
        ["build (MIME bytes)", us["build"], 1e6 / us["build"], 1.0],
        ["build + signature (now)", us["build_signed"], 1e6 / us["build_signed"], r["build_ratio"]],
        ["build + dkim.sign (before)", us["build_dkimpy"], 1e6 / us["build_dkimpy"],
         r["dkimpy_build_ratio"]],
        ["compose (render + build)", us["compose"], 1e6 / us["compose"], 1.0],
        ["compose, signed (now)", us["compose_signed"], 1e6 / us["compose_signed"],
         r["compose_ratio"]],
    ]  # fmt: skip
    title = (f"DKIM in one process: {r['n']:,} emails of {r['message_bytes']:,} bytes per side "
             "(medians)")  # fmt: skip
    return (f"{send}\nsigned/unsigned {s['ratio']:.2f} now, {s['dkimpy_ratio']:.2f} before; "
            f"now/before {s['speedup']:.1f}x\n"
            + table(title, ["", "CPU µs/email", "emails/s per core", "ratio"], rows)
            + f"\nsigning costs {r['sign_us_per_email']:.0f} µs per email now, "
            f"{r['dkimpy_sign_us_per_email']:.0f} µs before")  # fmt: skip


def _sunset_report(r: dict[str, Any]) -> str:
    rows = []
    for db in ("postgresql", "sqlite"):
        d = r[db]
        rows.append([f"{db}: bare INSERT … SELECT", d["subscribers"], d["inactive"],
                     d["bare_first"], 1.0, d["bare_quiet"], 1.0, ""])  # fmt: skip
        rows.append([f"{db}: nurture sunset", d["subscribers"], d["inactive"], d["first"],
                     d["first_ratio"], d["quiet"], d["quiet_ratio"], d["between"]])  # fmt: skip
    return table("sunset: the policy over a list of mixed activity (medians)",
                 ["", "subscribers", "inactive", "first s", "ratio", "quiet s", "ratio",
                  "between s"], rows)  # fmt: skip


REPORTS = {"send": _send_report, "broadcast": _broadcast_report, "schedule": _schedule_report, "signup": _signup_report,
           "import": _import_report, "startup": _startup_report, "dkim": _dkim_report,
           "sunset": _sunset_report}  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
