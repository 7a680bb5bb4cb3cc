"""Commands of the web side: serve, form-snippet, events add."""

from __future__ import annotations

import json
import logging

import click

from nurture import clock
from nurture.cli import cli, command, settings_of
from nurture.content.sequences import catalog_for
from nurture.errors import NurtureError
from nurture.people.events import add_event


@command(cli, "serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 for every interface.")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="gunicorn worker processes.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True,
              help="Threads per worker.")  # fmt: skip
@click.option("--send-interval", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="SECONDS",
              help="Embedded mode: run due sends this often, in-process (0: never; use cron).")  # fmt: skip
@click.option("--proxies", type=click.IntRange(min=0), default=0, show_default=True,
              help="Reverse proxies in front that set X-Forwarded-For (trusted for client "
                   "addresses only when set).")  # fmt: skip
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int, threads: int,
          send_interval: float, proxies: int) -> None:  # fmt: skip
    """Run the web app (signup form, confirm and unsubscribe pages, tracking, API)
    with gunicorn.

    In embedded mode (no NURTURE_REDIS_URL) it also sends what is due every
    --send-interval seconds, so this one command is a working system. With Redis,
    run `nurture worker` and `nurture send-due` from cron as well. Put it behind a
    reverse proxy for HTTPS, say so with --proxies 1, and set NURTURE_BASE_URL to
    the public address.

    \b
    Example:
      nurture serve --port 8000 --proxies 1
      curl -s localhost:8000/healthz
    """
    from nurture.web.server import Server

    settings = settings_of(ctx)
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # each worker checks the schema
    mode = (f"embedded mode: due emails are sent every {send_interval:g} s"
            if settings.embedded and send_interval else
            "embedded mode: run `nurture send-due` from cron" if settings.embedded
            else "Redis mode: run `nurture worker` and `nurture send-due` too")  # fmt: skip
    click.echo(f"nurture: serving http://{host}:{port} for {settings.base_url} ({mode})")
    Server(settings, host=host, port=port, workers=workers, threads=threads,
           send_interval=send_interval, proxies=proxies).run()  # fmt: skip


@command(cli, "form-snippet")
@click.option("--sequence", help="Also enrol people in this sequence once they confirm.")
@click.option("--tag", "tags", multiple=True, help="Tag people who sign up here; repeatable.")
@click.pass_context
def form_snippet_cmd(ctx: click.Context, sequence: str | None, tags: tuple[str, ...]) -> None:
    """Print an HTML signup form to paste into another site.

    It posts to NURTURE_BASE_URL/subscribe, works without JavaScript, and carries a
    hidden honeypot field that catches bots. Set NURTURE_BASE_URL first. With
    signup_topics in nurture.toml it offers those topics as checkboxes.

    \b
    Example:
      NURTURE_BASE_URL=https://news.crumb.example nurture form-snippet --tag website > form.html
    """
    from nurture.web.snippet import form_snippet

    settings = settings_of(ctx)
    click.echo(form_snippet(settings, catalog_for(settings.sequences_dir), sequence, tags))


@cli.group("events")
def events() -> None:
    """Record custom events (as POST /api/events does)."""


@command(events, "add")
@click.argument("email")
@click.argument("event")
@click.option("--data", help="Details as a JSON object, kept with the event.")
@click.pass_context
def events_add(ctx: click.Context, email: str, event: str, data: str | None) -> None:
    """Record a custom event for a subscriber, such as demo_booked.

    Sequences can use it as a goal (exit_when) or a condition.

    \b
    Example:
      nurture events add ana@example.com demo_booked --data '{"when": "2026-03-04"}'
    """
    try:
        details = json.loads(data) if data else {}
    except json.JSONDecodeError as e:
        raise NurtureError(f"--data is not JSON: {e}") from None
    if not isinstance(details, dict):
        raise NurtureError('--data must be a JSON object, like {"plan": "pro"}')
    recorded = add_event(settings_of(ctx), email, event, clock.now(), details)
    click.echo(f"Recorded {recorded.name} for {email}.")
