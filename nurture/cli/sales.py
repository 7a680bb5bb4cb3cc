"""Commands about sales readiness: leads."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime

import click

from nurture.cli import cli, command, settings_of
from nurture.errors import NurtureError
from nurture.reports.leads import sales_ready


@command(cli, "leads")
@click.option("--since", help="Only leads that became ready on or after this date (YYYY-MM-DD).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)  # fmt: skip
@click.pass_context
def leads(ctx: click.Context, since: str | None, fmt: str) -> None:
    """Sales-ready subscribers with the evidence: score, when, what they opened and clicked.

    \b
    Examples:
      nurture leads --since 2026-03-01
      nurture leads --format csv > leads.csv
    """
    start = None
    if since:
        try:
            start = datetime.fromisoformat(since).replace(tzinfo=UTC)
        except ValueError:
            raise NurtureError(f"--since {since!r} is not a date like 2026-03-01") from None
    rows = sales_ready(settings_of(ctx), start)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["email"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: " ".join(v) if isinstance(v, list) else v for k, v in row.items()})
        return
    click.echo(f"{'email':<32} {'score':>5}  {'ready since':<16}  {'handoff':<10} evidence")
    for row in rows:
        evidence = ", ".join(
            [f"clicked {c}" for c in row["clicked"]] + [f"event {e}" for e in row["events"]]
        )
        click.echo(f"{row['email']:<32} {row['score']:>5}  {row['ready_at'][:16]:<16}  "
                   f"{row['handoff']:<10} {evidence or '-'}")  # fmt: skip
    click.echo(f"{len(rows)} sales-ready leads")
