"""The import benchmark: `nurture subscribers import --confirmed` of N rows with three
declared fields, against a bare COPY (PostgreSQL) / executemany (SQLite) of the same
rows read from the same file, in the same run, into the same empty table."""

from __future__ import annotations

import csv
import json
import secrets
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.services import PYTHON, ROOT, nurture_env, pg_database, workspace
from bench.stats import median

FIELDS = '\n[fields]\ncompany = "text"\ncity = "text"\nplan = "text"\n'
CITIES = ("Leeds", "Bristol", "Paris", "Lyon", "Berlin", "Porto", "Oslo")
PLANS = ("free", "pro", "team")


def write_csv(path: Path, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["email", "first_name", "company", "city", "plan"])
        for i in range(n):
            out.writerow([f"reader{i}@example{i % 97}.com", f"Reader {i}", f"Company {i % 1000}",
                          CITIES[i % len(CITIES)], PLANS[i % len(PLANS)]])  # fmt: skip


def _rows(path: Path) -> list[tuple[str, str, str, str, str]]:
    """What the baseline stores: the address, the name, the three fields as JSON, the
    time, and the link key every subscriber row must have (drawn as nurture draws it)."""
    now = datetime.now(UTC).isoformat()
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [
            (
                email,
                name,
                json.dumps({"company": c, "city": city, "plan": plan}),
                now,  # type: ignore[misc]
                secrets.token_urlsafe(12),
            )
            for email, name, c, city, plan in reader
        ]


def bare_pg(url: str, path: Path) -> float:
    import psycopg

    started = time.perf_counter()
    rows = _rows(path)
    sql = ("COPY subscribers (email, first_name, attributes, created_at, link_key, status, source,"
           " score) FROM STDIN")  # fmt: skip
    with psycopg.connect(url) as conn, conn.cursor().copy(sql) as copy:
        for email, name, attrs, now, key in rows:  # type: ignore[misc]
            copy.write_row((email, name, attrs, now, key, "active", "import", 0))
    return time.perf_counter() - started


def bare_sqlite(url: str, path: Path) -> float:
    started = time.perf_counter()
    rows = _rows(path)
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    with conn:
        conn.executemany(
            "INSERT INTO subscribers (email, first_name, attributes, created_at, link_key, status,"
            " source, score) VALUES (?, ?, ?, ?, ?, 'active', 'import', 0)",
            rows,
        )
    conn.close()
    return time.perf_counter() - started


def measured_import(env: dict[str, str], path: Path) -> float:
    """The real command in its own process, Python's start-up included."""
    started = time.perf_counter()
    done = subprocess.run([PYTHON, "-m", "nurture", "subscribers", "import", str(path),
                           "--confirmed"], env=env, cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "0 bad rows" not in done.stdout:
        raise RuntimeError(f"import failed: {done.stdout[-500:]} {done.stderr[-2000:]}")
    return seconds


def _empty(url: str) -> None:
    from sqlalchemy import text

    from nurture.store import engine as db
    from nurture.store.tables import Base

    engine = db.engine_for(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


def _check(url: str, n: int) -> None:
    """Every row arrived with its fields and its enrolment in the signup sequence."""
    from sqlalchemy import func, select

    from nurture.store import engine as db
    from nurture.store.tables import Enrollment, Subscriber

    with db.engine_for(url).connect() as conn:
        subs = conn.scalar(select(func.count()).select_from(Subscriber))
        enrolled = conn.scalar(select(func.count()).select_from(Enrollment))
        attrs = conn.scalar(
            select(Subscriber.attributes).where(Subscriber.email == "reader7@example7.com")
        )
    if (
        subs != n
        or enrolled < n
        or attrs != {"company": "Company 7", "city": "Leeds", "plan": "pro"}
    ):
        raise RuntimeError(f"import wrote {subs} subscribers, {enrolled} enrolments, {attrs}")


def _case(url: str, env: dict[str, str], path: Path, n: int, runs: int,
          bare: Callable[[str, Path], float], log: Any, name: str) -> dict[str, Any]:  # fmt: skip
    imports, bases = [], []
    for run in range(runs):
        _empty(url)
        bases.append(bare(url, path))
        _empty(url)
        imports.append(measured_import(env, path))
        _check(url, n)
        log(f"  import {name} run {run + 1}: bare {bases[-1]:.2f} s, nurture {imports[-1]:.2f} s")
    seconds, base = median(imports), median(bases)
    return {"rows": n, "seconds": seconds, "rows_per_s": n / seconds, "baseline_seconds": base,
            "baseline_rows_per_s": n / base, "ratio": base / seconds,
            "runs": {"nurture": imports, "baseline": bases}}  # fmt: skip


def run(n: int = 100_000, runs: int = 3, log: Any = print) -> dict[str, Any]:
    from nurture.store import engine as db

    result: dict[str, Any] = {}
    with workspace() as ws, tempfile.TemporaryDirectory() as tmp:
        toml = ws / "nurture.toml"
        toml.write_text(toml.read_text() + FIELDS)
        path = Path(tmp) / "people.csv"
        write_csv(path, n)
        with pg_database() as pg_url:
            env = nurture_env(ws, pg_url, None)
            result["postgresql"] = _case(pg_url, env, path, n, runs, bare_pg, log, "postgresql")
        db.dispose_all()
        lite = f"sqlite:///{Path(tmp) / 'bench.db'}"
        db.upgrade(db.engine_for(lite))
        env = nurture_env(ws, lite, None)
        result["sqlite"] = _case(lite, env, path, n, runs, bare_sqlite, log, "sqlite")
        db.dispose_all()
    return result
