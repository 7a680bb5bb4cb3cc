"""`nurture init` and `nurture db`."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from nurture.cli import cli, command, settings_of
from nurture.content.rendering import example_root
from nurture.errors import NurtureError
from nurture.store.engine import upgrade_database

NURTURE_TOML = """\
# nurture settings. Environment variables (NURTURE_<NAME>) win over these.
# Keep secrets (smtp_url with a password, secret_key, api_key) in the environment.

from = "Maya at Crumb & Co <hello@crumb.example>"
postal_address = "Crumb & Co, 12 Mill Lane, Bristol BS1 4XY, United Kingdom"
base_url = "http://localhost:8000"
timezone = "UTC"
# database_url = "postgresql://nurture@localhost/nurture"
# redis_url = "redis://localhost:6379/0"
# smtp_url = "smtp+starttls://user@smtp.example.com:587"

# Topics readers can choose on the unsubscribe page (docs/topics.md); without this table
# the page offers "this sequence" or "everything". Each sequence then needs a topic.
# signup_topics = ["newsletter"]
# [topics]
# newsletter = "The monthly newsletter"
# from-curious-to-customer = "Getting started"
#
# Readers silent for 120 days get the win-back series, then leave (`nurture sunset --help`):
# [sunset]
# inactive_for = "120d"
# winback = "win-back"
# then = "unsubscribe"     # or "stop_broadcasts"
"""


#: What a workspace keeps out of git: the database, sent emails, the secret, DKIM private keys.
WORKSPACE_GITIGNORE = "nurture.db*\noutbox/\n.nurture-secret\ndkim-*.pem\n"


@command(cli, "init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
def init(directory: Path) -> None:
    """Write a new workspace with the example sequence, templates, a newsletter issue
    and a nurture.toml.

    \b
    Example:
      nurture init crumb && cd crumb && nurture validate
    """
    if (directory / "sequences").exists() or (directory / "nurture.toml").exists():
        raise NurtureError(f"{directory} already holds a workspace; pick an empty folder")
    source = example_root()
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("sequences", "templates", "newsletters"):
        shutil.copytree(source / name, directory / name)
    (directory / "nurture.toml").write_text(NURTURE_TOML)
    (directory / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    click.echo(f"Wrote a workspace to {directory}. Next: cd {directory} && nurture validate")


@cli.group("db")
def db() -> None:
    """Database schema management."""


@command(db, "upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply database migrations (safe to run again; does nothing when up to date).

    \b
    Example:
      NURTURE_DATABASE_URL=postgresql://nurture@db/nurture nurture db upgrade
    """
    before, after = upgrade_database(settings_of(ctx))
    if before == after:
        click.echo(f"Database already up to date (revision {after}).")
    else:
        click.echo(f"Database upgraded from {before or 'empty'} to {after}.")
