"""`nurture plan`: what an edit of the sequences does to the people in them."""

from __future__ import annotations

import json
import sys

import click

from nurture.cli import cli, command, settings_of
from nurture.journeys.plan import make_plan
from nurture.journeys.planview import plan_json, plan_text


@command(cli, "plan")
@click.option("--since", metavar="REF",
              help="Compare with the files at this git ref instead of the version last run.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json for tools.")  # fmt: skip
@click.pass_context
def plan(ctx: click.Context, since: str | None, fmt: str) -> None:
    """Show what the workspace's sequence edits do to the people already in them.

    Compares the sequences and templates with the version send-due, the worker or
    serve last ran with (or with git REF), and, against the live database (only
    read), counts whose enrolment ends, whose next email moves, who is now skipped by
    a gate, whose emails of the next 7 days end, move or come; then the emails each
    step sends in the next 7 days, before and after. Exit status 2 when the edit ends
    or moves anyone, 0 when it affects no one, 1 when the workspace has errors (an
    email that cannot be rendered included).

    \b
    Example:
      nurture plan
      nurture plan --since origin/main --format json
    """
    result = make_plan(settings_of(ctx), since)
    if fmt == "json":
        click.echo(json.dumps(plan_json(result), indent=2))
    else:
        click.echo(plan_text(result))
    sys.exit(2 if result.moves_people else 0)
