"""The `nurture` command line: one function per command, domain errors as one clear line.

Commands are imported when they run, not when `nurture` starts: the modules behind them
pull in SQLAlchemy, Alembic, Dramatiq and Flask, which cost a second of CPU that
`nurture --help` or `nurture validate` from a git hook should not pay.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from nurture.errors import NurtureError
from nurture.settings import Settings, load_settings
from nurture.urls import describe

F = TypeVar("F", bound=Callable[..., Any])

#: Every top-level command: the module under nurture.cli that defines it, and the
#: short help `nurture --help` lists without importing that module (a test keeps both
#: true to the commands themselves).
COMMANDS: dict[str, tuple[str, str]] = {
    "bounces": ("bounces", "Bounces and complaints that arrive after the send: by pipe, mailbox or webhook."),
    "broadcast": ("broadcast", "Newsletters: write an issue in Markdown, test it, send or schedule it to a segment."),
    "db": ("database", "Database schema management."),
    "dkim": ("deliverability", "DKIM signing: make the key whose public half goes in DNS."),
    "doctor": ("deliverability", "Check what mailbox providers check: SPF, DKIM, DMARC, one-click unsubscribe, the emails, complaint rates."),
    "experiment": ("experiments", "A/B tests and holdouts: list them, end one keeping the winner."),
    "events": ("web", "Record custom events (as POST /api/events does)."),
    "form-snippet": ("web", "Print an HTML signup form to paste into another site."),
    "init": ("database", "Write a new workspace with the example sequence, templates, a newsletter issue and a nurture.toml."),
    "leads": ("sales", "Sales-ready subscribers with the evidence: score, when, what they opened and clicked."),
    "plan": ("plan", "Show what the workspace's sequence edits do to the people already in them."),
    "preview": ("content", "Render one email exactly as it would be sent."),
    "send-due": ("sending", "Claim every step due now, write its delivery and enqueue it."),
    "serve": ("web", "Run the web app (signup form, confirm and unsubscribe pages, tracking, API) with gunicorn."),
    "simulate": ("content", "Dry run: the dated timeline one new subscriber would receive. Touches no data."),
    "stats": ("sending", "Per step: emails sent, pending, failed, skipped, cancelled, and the people who opened, clicked, unsubscribed or bounced; per sequence, the funnel from education to sales (entered, finished education, became ready, got sales prompts, reached the goal) and the sales handoffs."),
    "sunset": ("sunset", "Apply the [sunset] policy now: the silent get the win-back, then leave."),
    "suppression": ("bounces", "The suppression list: addresses never mailed again (kept hashed)."),
    "subscribers": ("people", "Add, browse, import, export and forget subscribers."),
    "test": ("content", "Run the journey tests in sequences/tests/*.yaml through the real scheduler."),
    "unsubscribe": ("people", "Unsubscribe at once: nothing more is sent, even what is already queued."),
    "validate": ("content", "Check every sequence and template; print each problem as path:line: message."),
    "worker": ("worker", "Run Dramatiq workers that send what `send-due` enqueues, on NURTURE_REDIS_URL."),
}  # fmt: skip


class LazyGroup(click.Group):
    """A group that imports a command's module the first time the command is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"nurture.cli.{COMMANDS[cmd_name][0]}")
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from COMMANDS, so `--help` imports no command module."""
        names = self.list_commands(ctx)
        if not names:
            return
        width = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            short = (
                loaded.get_short_help_str(width) if loaded else _shorten(COMMANDS[name][1], width)
            )
            rows.append((name, short))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _shorten(text: str, width: int) -> str:
    """What click makes of a command's help for the list: its first sentence, cut to fit."""
    return click.Command(None, help=text).get_short_help_str(width)


def settings_of(ctx: click.Context, *, toml_warnings: bool = True) -> Settings:
    """The settings, loaded once; their warnings go to stderr as they are loaded
    (`validate` reports nurture.toml's own problems as errors instead)."""
    obj = ctx.find_root().ensure_object(dict)
    if "settings" not in obj:
        settings = load_settings(obj.get("workspace"), env_file=obj.get("env_file"))
        toml = tuple(f"nurture.toml: {p}" for p in settings.toml_problems)
        shown = settings.warnings + (toml if toml_warnings else ())
        for warning in shown:
            click.echo(f"warning: {warning}", err=True)
        obj["settings"] = settings
    return obj["settings"]  # type: ignore[no-any-return]


def database_error(e: Exception) -> bool:
    """A lost or refused database connection: the user's to fix, not a bug to show as a
    traceback. Checked by name so the CLI need not import SQLAlchemy to start."""
    names = {c.__name__ for c in type(e).__mro__ if c.__module__.startswith("sqlalchemy.")}
    return bool(names & {"OperationalError", "InterfaceError"})


def command(group: click.Group, *args: Any, **kwargs: Any) -> Callable[[F], F]:
    """A click command that turns NurtureError into a one-line ClickException."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except NurtureError as e:
                raise click.ClickException(str(e)) from None
            except Exception as e:
                if not database_error(e):
                    raise
                loaded = (click.get_current_context().find_root().obj or {}).get("settings")
                url = loaded.database_url if loaded else None
                raise click.ClickException(f"the database failed: {describe(e, url)}") from None

        return group.command(*args, **kwargs)(wrapper)  # type: ignore[return-value]

    return decorate


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="NURTURE_WORKSPACE",
    help="Folder with sequences/, templates/email/ and nurture.toml (default: current folder).",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="NURTURE_ENV_FILE",
    help="Read settings from this file of KEY=VALUE lines (e.g. for cron); the environment "
    "wins over it, it wins over nurture.toml.",
)
@click.version_option(package_name="nurture")
@click.pass_context
def cli(ctx: click.Context, workspace: Path | None, env_file: Path | None) -> None:
    """nurture: email nurture sequences and newsletters from YAML and Jinja.

    \b
    Example, from a fresh workspace:
      nurture init shop && cd shop
      nurture validate
      nurture subscribers add ana@example.com --first-name Ana --confirmed
      nurture send-due          # run it from cron every minute (see send-due --help)
    """
    obj = ctx.ensure_object(dict)
    obj["workspace"], obj["env_file"] = workspace, env_file


def main() -> None:
    cli(prog_name="nurture")
