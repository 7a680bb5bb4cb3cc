"""The `nurture` command line: one function per command, domain errors as one clear line."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from nurture.errors import NurtureError
from nurture.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("workspace"))
    return obj["settings"]  # type: ignore[no-any-return]


def command(group: click.Group, *args: Any, **kwargs: Any) -> Callable[[F], F]:
    """A click command that turns NurtureError into a one-line ClickException."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except NurtureError as e:
                raise click.ClickException(str(e)) from None

        return group.command(*args, **kwargs)(wrapper)  # type: ignore[return-value]

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), envvar="NURTURE_WORKSPACE",
    help="Folder with sequences/, templates/email/ and nurture.toml (default: current folder).",
)  # fmt: skip
@click.version_option(package_name="nurture")
@click.pass_context
def cli(ctx: click.Context, workspace: Path | None) -> None:
    """nurture: email nurture sequences and newsletters from YAML and Jinja.

    \b
    Example, from a fresh workspace:
      nurture init shop && cd shop
      nurture validate
      nurture subscribers add ana@example.com --first-name Ana --confirmed
      nurture send-due          # run it from cron every minute
    """
    ctx.ensure_object(dict)["workspace"] = workspace


def main() -> None:
    cli(prog_name="nurture")


# Commands live in their own modules; importing them registers them on `cli`.
from nurture.commands import (  # noqa: E402, F401
    broadcast,
    content,
    database,
    people,
    sales,
    sending_cmds,
    web,
    worker,
)
