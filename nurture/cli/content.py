"""Commands for marketers' content: validate, preview, simulate."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from nurture.cli import cli, command, settings_of
from nurture.content.fields import fields_for
from nurture.content.validation import summary, validate_workspace

if TYPE_CHECKING:
    from nurture.delivery.compose import Composed

# preview and simulate import the database, the composer and the simulator when they
# run: `validate`, often run from a git hook, starts without them.


@command(cli, "validate")
@click.option("--check-links", is_flag=True,
              help="Also ask every linked URL whether it answers (HEAD, 5 s each); a dead "
              "link is a warning.")  # fmt: skip
@click.pass_context
def validate(ctx: click.Context, check_links: bool) -> None:
    """Check every sequence and template; print each problem as path:line: message.

    Topics are checked too: [topics] and signup_topics in nurture.toml, each sequence's
    topic and the `topic:` of each newsletters/*.md issue.

    Exits 1 when there is any error (warnings alone exit 0), so it fits a git hook or CI.
    It also lints a rendered sample of every email: links must be absolute, the text
    part must not be empty (errors); images want alt text, links a telling text, the
    layout a lang, subjects fit an inbox and each step a preheader (warnings).

    \b
    Examples:
      $ nurture validate
      sequences/welcome.yaml:12: unknown key 'subjet' (did you mean 'subject'?)
      nurture validate --check-links   # also finds links that answer 404
    """
    settings = settings_of(ctx, toml_warnings=False)
    problems = validate_workspace(
        settings, fields_for(settings.workspace).types, check_links=check_links
    )
    for problem in problems:
        click.echo(str(problem), err=not problem.warning)
    click.echo(summary(settings, problems))
    if any(not p.warning for p in problems):
        sys.exit(1)


@command(cli, "preview")
@click.argument("sequence")
@click.argument("step")
@click.option("--subscriber", "email", help="Render for this subscriber instead of a sample one.")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="text",
              show_default=True, help="Which part to print; eml is the whole message.")  # fmt: skip
@click.option("--variant", help="Render this variant of a step with `variants:`.")
@click.pass_context
def preview(
    ctx: click.Context, sequence: str, step: str, email: str | None, fmt: str, variant: str | None
) -> None:
    """Render one email exactly as it would be sent.

    \b
    Example:
      nurture preview from-curious-to-customer welcome --format html > welcome.html
      nurture preview from-curious-to-customer welcome --variant B
    """
    from nurture.delivery.preview import preview_step

    echo_composed(preview_step(settings_of(ctx), sequence, step, email, variant), fmt)


def echo_composed(composed: Composed, fmt: str) -> None:
    """Print a rendered email as `preview` shows it: text, html or the whole .eml."""
    if fmt == "eml":
        click.echo(composed.envelope.data.decode("utf-8", "replace"))
    elif fmt == "html":
        click.echo(composed.rendered.html)
    else:
        click.echo(f"Subject: {composed.rendered.subject}\n\n{composed.rendered.text}")


@command(cli, "simulate")
@click.argument("sequence")
@click.option("--days", type=click.IntRange(1, 3650), default=60, show_default=True,
              help="How far ahead to look.")  # fmt: skip
@click.option("--timezone", help="The subscriber's IANA time zone (default NURTURE_TIMEZONE).")
@click.option("--events", help="Activity to play, as KIND:NAME@WHEN after signup, comma-separated: "
              "click:STEP, open:STEP, event:NAME, tag:NAME (e.g. click:welcome@1d).")  # fmt: skip
@click.option("--email", metavar="ADDRESS", help="The subscriber's address: experiments assign "
              "variants and holdouts by it (default new.subscriber@example.com).")  # fmt: skip
@click.pass_context
def simulate(
    ctx: click.Context,
    sequence: str,
    days: int,
    timezone: str | None,
    events: str | None,
    email: str | None,
) -> None:
    """Dry run: the dated timeline one new subscriber would receive. Touches no data.

    It runs the real scheduling and rendering code against a throw-away database.

    Each row shows the local and UTC time; a gate's decision and why appear in brackets,
    as does the variant of a step with `variants:` (the one the address gets, or the kept
    one once `nurture experiment end` ended it) and a holdout's skipped steps.

    \b
    Examples:
      nurture simulate from-curious-to-customer --days 30 --timezone Europe/London
      nurture simulate from-curious-to-customer --events "click:welcome@1d,event:pricing_viewed@3d"
      nurture simulate from-curious-to-customer --email ana@example.com   # her variants
    """
    from nurture.people.subscribers import check_timezone
    from nurture.simulate import simulate as run_simulation

    settings = settings_of(ctx)
    check_timezone(timezone)
    rows = run_simulation(settings, sequence, days, timezone, events, email)
    if not rows:
        click.echo(f"Nothing would be sent within {days} days.")
        return
    first_day = rows[0].local.date()  # days count on the subscriber's own calendar
    zone = rows[0].local.tzname()
    click.echo(f"{'day':>4}  {'local time (' + str(zone) + ')':<22} {'UTC':<17} {'stage':<9} "
               f"{'step':<24} subject")  # fmt: skip
    for row in rows:
        day = (row.local.date() - first_day).days
        if row.status in ("event", "sent"):
            status = f"  [{row.note}]" if row.note else ""
        else:
            status = f"  [{row.status}: {row.note}]"
        click.echo(f"{day:>4}  {row.local:%a %Y-%m-%d %H:%M}   {row.at:%Y-%m-%d %H:%M} "
                   f"{row.stage:<9} {row.step_id:<24} {row.subject}{status}")  # fmt: skip


@command(cli, "test")
@click.option("--snapshots", is_flag=True,
              help="Also render every email each persona receives into "
              "sequences/tests/__snapshots__/ and fail when one changed.")  # fmt: skip
@click.option(
    "--update", is_flag=True, help="Accept changed snapshots: write them (implies --snapshots)."
)
@click.pass_context
def test(ctx: click.Context, snapshots: bool, update: bool) -> None:
    """Run the journey tests in sequences/tests/*.yaml through the real scheduler.

    Each persona signs up on a throw-away database, does what its `events` say, and
    what it receives is checked against its `expect` and the file's `invariants`.
    Failures print as path:line: expected …, got …; exits 1 on any, so it fits CI
    and a git hook.

    \b
    Examples:
      $ nurture test
      sequences/tests/welcome.yaml:14: expected lets-talk on day 25, got never (persona ana)
      1 test file, 4 personas, 31 checks: 1 failed
      nurture test --snapshots --update   # accept the emails as they render now
    """
    from nurture.journeytests.run import run_tests

    settings = settings_of(ctx)
    outcome = run_tests(settings)
    notes: list[str] = []
    if snapshots or update:
        from nurture.journeytests.snapshots import check_snapshots

        notes = check_snapshots(settings, outcome, update=update)
    for failure in sorted(outcome.failures, key=lambda f: (f.path, f.line or 0)):
        click.echo(str(failure), err=True)
    for note in notes:
        click.echo(note)
    if outcome.files == 0:
        click.echo("No journey tests: write some in sequences/tests/*.yaml "
                   "(see docs/sequences-as-code.md).")  # fmt: skip
        return
    click.echo(outcome.summary())
    if outcome.failures:
        sys.exit(1)
