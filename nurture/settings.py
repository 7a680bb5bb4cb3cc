"""Settings: environment variables over `nurture.toml`, each with a safe default.

Every value is parsed once into a frozen `Settings`; a malformed value raises a
`ConfigError` that names the variable, so operators never guess.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.envfile import exposure_warning, read_env_file
from nurture.errors import ConfigError
from nurture.mailsettings import bounce_settings, dkim_settings
from nurture.secretkey import MIN_SECRET_LENGTH, SECRET_FILE, check_key, generated_key
from nurture.sender import sender_problem
from nurture.sunsetpolicy import SunsetPolicy, load_policy
from nurture.urls import check_database_url, check_redis_url, check_smtp_url

PREFIX = "NURTURE_"
#: What makes a folder a workspace; commands refuse to run (and write) anywhere else.
WORKSPACE_MARK = "sequences"
#: Default SMTP connections at once across all workers.
DEFAULT_SMTP_CONCURRENCY = 4
#: Delivery timings (docs/distributed.md), each settable in seconds for tests and
#: unusual set-ups. A `queued` delivery no worker picked up for REQUEUE_AFTER is
#: enqueued again by `send-due` (its queue message was lost).
DEFAULT_REQUEUE_AFTER = timedelta(minutes=5)
#: A delivery still `sending` RESEND_AFTER after its claim belongs to a worker that
#: stopped mid-send: `send-due` takes it back and it is sent again (at-least-once).
DEFAULT_RESEND_AFTER = timedelta(minutes=10)
#: First wait after a temporary failure (4xx, server unreachable); doubles each attempt.
DEFAULT_RETRY_BACKOFF = timedelta(minutes=2)
#: Signups one client address may post to the public form (`limits` syntax, counted
#: in Redis when it is set). Raise it for a form behind a shared address (an office NAT).
DEFAULT_SUBSCRIBE_LIMIT = "5 per minute; 30 per hour"
#: Least seconds a signup takes to answer. A signup costs the same statements and the
#: same enqueue whatever is known about the address (nurture.people.signups), so no
#: floor is needed to hide who is subscribed; an operator may still set one.
DEFAULT_SIGNUP_SECONDS = 0.0
#: Requests to confirm, unsubscribe and resubscribe links one client address may make.
DEFAULT_LINK_LIMIT = "60 per minute; 600 per hour"
#: Requests one personal link may get, from anywhere: a person needs a handful.
DEFAULT_TOKEN_LIMIT = "10 per minute; 40 per hour"  # noqa: S105 - a limit, not a secret
#: Names known besides the settings `load_settings` reads (those it records as it reads
#: them, so there is no second list to forget): tables of nurture.toml read by
#: nurture.content.fields, nurture.content.topics and nurture.sunsetpolicy, and variables
#: that say where the settings are.
TOML_TABLES = ("fields", "signup_fields", "topics", "signup_topics", "sunset")
LOCATION_VARIABLES = ("workspace", "env_file")
#: Variables of the test suite and the benchmarks, never settings.
DEV_PREFIXES = (PREFIX + "TEST_", PREFIX + "BENCH_")


@dataclass(frozen=True)
class Settings:
    workspace: Path
    database_url: str
    redis_url: str | None
    smtp_url: str | None
    secret_key: str
    base_url: str
    sender: str | None
    postal_address: str | None
    api_key: str | None
    timezone: str
    tracking: bool
    cors_origins: tuple[str, ...]
    send_rate: float | None
    smtp_concurrency: int
    max_per_day: int
    sales_webhook_url: str | None = None
    sales_webhook_secret: str | None = None
    sales_email: str | None = None
    outbox_dir: Path | None = None
    requeue_after: timedelta = DEFAULT_REQUEUE_AFTER
    resend_after: timedelta = DEFAULT_RESEND_AFTER
    retry_backoff: timedelta = DEFAULT_RETRY_BACKOFF
    subscribe_limit: str = DEFAULT_SUBSCRIBE_LIMIT
    signup_seconds: float = DEFAULT_SIGNUP_SECONDS
    #: Not read from the environment: fixed for every deployment, lowered by tests.
    link_limit: str = DEFAULT_LINK_LIMIT
    token_limit: str = DEFAULT_TOKEN_LIMIT
    #: Tags a public signup (form or JSON) may set; none unless listed, so that a
    #: visitor cannot put themselves in `tag:vip`.
    signup_tags: frozenset[str] = frozenset()
    #: DKIM signing (all three or none): the selector, the d= domain and the PEM key file.
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key: Path | None = None
    #: The DNS server `nurture doctor` asks ("host:port"); None: the system resolver.
    dns_server: str | None = None
    #: Keys of nurture.toml nurture does not know, as "unknown setting 'x' (did you mean
    #: 'y'?)": an error for `validate`, a warning for every other command.
    toml_problems: tuple[str, ...] = ()
    #: Warnings about the environment and env file (unknown NURTURE_* names, a
    #: readable env file), printed by every command.
    warnings: tuple[str, ...] = ()
    #: `bounces@bounce.example`: each email's envelope sender becomes a signed
    #: `bounces+<token>@bounce.example` naming its delivery; None leaves it the From address.
    bounce_address: str | None = None
    #: Soft bounces within `soft_bounce_window` that suppress an address (at least 2).
    soft_bounce_count: int = 3
    soft_bounce_window: timedelta = timedelta(days=30)
    #: `imaps://user:pass@host/INBOX`: the mailbox `nurture bounces fetch` reads.
    bounce_imap_url: str | None = None
    #: Webhook secrets: Postmark's token in the webhook URL, Mailgun's signing key.
    postmark_webhook_token: str | None = None
    mailgun_signing_key: str | None = None
    #: The SNS topics whose SES notifications /webhooks/ses accepts (none: it is off).
    ses_topic_arns: tuple[str, ...] = ()
    #: SendGrid's event webhook verification key (DER of an ECDSA P-256 public key).
    sendgrid_webhook_key: bytes | None = None
    #: The `[sunset]` policy of nurture.toml (nurture.sunsetpolicy); None: nobody is sunset.
    sunset: SunsetPolicy | None = None

    @property
    def embedded(self) -> bool:
        """No Redis: messages are processed in-process by the same actor code."""
        return not self.redis_url

    @property
    def outbox(self) -> Path:
        return self.outbox_dir or self.workspace / "outbox"

    @property
    def sequences_dir(self) -> Path:
        return self.workspace / "sequences"

    @property
    def templates_dir(self) -> Path:
        return self.workspace / "templates" / "email"


def _read_toml(workspace: Path) -> dict[str, Any]:
    path = workspace / "nurture.toml"
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_toml_error(e)) from None
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise ConfigError(f"{path}: values are nested too deeply") from None


def _toml_error(e: tomllib.TOMLDecodeError) -> str:
    """tomllib's reason at `nurture.toml:LINE`, as every other mistake in the file is
    shown; a key written twice is said in those words."""
    found = re.search(r"^(.*) \(at line (\d+), column \d+\)$", str(e))
    if found is None:
        return f"nurture.toml: {e}"
    why, line = found.group(1), found.group(2)
    if why == "Cannot overwrite a value":
        why = "a key is written twice (or a table given twice): keep one"
    return f"nurture.toml:{line}: {why}"


class _Source:
    """Looks a name up in the environment first, then in nurture.toml."""

    def __init__(self, env: dict[str, str], toml: dict[str, Any]):
        self.env, self.toml = env, toml
        #: Every name looked up: the settings nurture knows.
        self.asked: set[str] = set()

    def get(self, name: str) -> str | None:
        self.asked.add(name.lower())
        var = PREFIX + name.upper()
        if var in self.env:
            return self.env[var].strip() or None
        value = self.toml.get(name.lower())
        return None if value is None else str(value).strip() or None

    def names(self, name: str) -> frozenset[str]:
        """A list in nurture.toml, or comma- or space-separated text, lower-cased."""
        self.asked.add(name.lower())
        var = PREFIX + name.upper()
        raw = self.env[var] if var in self.env else self.toml.get(name.lower())
        if raw is None:
            return frozenset()
        if isinstance(raw, str):
            raw = raw.replace(",", " ").split()
        if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
            raise ConfigError(f"{var} must be a list of names, got {raw!r}")
        return frozenset(n.strip().lower() for n in raw if n.strip())

    def number(self, name: str, kind: type, default: Any, minimum: float = 0) -> Any:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name.upper()} must be a number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{PREFIX}{name.upper()} must be at least {minimum}, got {raw!r}")
        return value

    def seconds(self, name: str, default: timedelta) -> timedelta:
        """A duration given in seconds, e.g. NURTURE_RESEND_AFTER=600."""
        value = self.number(name, float, None, minimum=0.1)
        return default if value is None else timedelta(seconds=value)

    def unknown(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(nurture.toml problems, environment warnings) for names nobody reads, which
        would otherwise be ignored without a word (`max_per_dya = 2`)."""
        in_file, in_env = (
            sorted(self.asked | set(TOML_TABLES)),
            sorted(self.asked | set(LOCATION_VARIABLES)),
        )
        in_toml = tuple(f"unknown setting {key!r}{_hint(key, in_file, '')}"
                        for key in self.toml if key not in in_file)  # fmt: skip
        env_warnings = tuple(
            f"unknown variable {var}{_hint(var[len(PREFIX):].lower(), in_env, PREFIX)} is ignored"
            for var in sorted(self.env)
            if var.startswith(PREFIX) and not var.startswith(DEV_PREFIXES)
            and var not in {PREFIX + n.upper() for n in in_env}
        )  # fmt: skip
        return in_toml, env_warnings


def _hint(name: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    return (
        f" (did you mean '{(prefix + close[0].upper()) if prefix else close[0]}'?)" if close else ""
    )


# The grammar of `limits.parse_many`, checked here without importing `limits` (a tenth
# of a second that every command would pay); the web app parses it for real.
_RATE = r"\s*[0-9]+\s*(?:/|\s*per\s*)\s*(?:[0-9]+)?\s*(?:second|minute|hour|day|month|year)s?\s*"
_RATES = re.compile(rf"{_RATE}(?:[,;|]{_RATE})*", re.IGNORECASE)


def _rate_limit(src: _Source, name: str, default: str) -> str:
    """A rate limit such as "5 per minute; 30 per hour", checked here so a typo
    is one clear error at start-up rather than a 500 on every signup."""
    value = src.get(name) or default
    if not _RATES.fullmatch(value):
        raise ConfigError(
            f"{PREFIX}{name.upper()} must be a rate such as '5 per minute; 30 per hour', "
            f"got {value!r}"
        )
    return value


def _sender(src: _Source) -> str | None:
    value = src.get("from")
    problem = value and sender_problem(value)
    if problem:
        raise ConfigError(f"{PREFIX}FROM {problem}")
    return value


def _workspace(workspace: str | Path | None, env: dict[str, str]) -> Path:
    """The workspace folder, refused unless it holds sequences/: a cron job started in
    the wrong folder must fail loudly, not run on a fresh database of its own."""
    given = workspace or env.get(PREFIX + "WORKSPACE")
    ws = Path(given or ".").resolve()
    if not ws.is_dir():
        raise ConfigError(f"workspace {ws} does not exist (set --workspace or NURTURE_WORKSPACE)")
    if not (ws / WORKSPACE_MARK).is_dir():
        where = f"in {ws}" if given else "here"
        raise ConfigError(
            f"no workspace {where} (no sequences/ folder): use --workspace or NURTURE_WORKSPACE"
        )
    return ws


def _key(src: _Source, ws: Path) -> str:
    """NURTURE_SECRET_KEY, else the key generated into the workspace. Only an empty value
    means unset: one of spaces alone is a key cut off or mistyped, and is refused like a
    short one rather than silently replaced (every link sent would stop working)."""
    var = f"{PREFIX}SECRET_KEY"
    raw = src.env.get(var, src.toml.get("secret_key"))
    given = src.get("secret_key")
    if not given and raw is not None and str(raw) != "":
        raise ConfigError(f"{var} holds only white space: set a key of at least "
                          f"{MIN_SECRET_LENGTH} random characters, or leave it empty to use "
                          f"the one generated into {SECRET_FILE}")  # fmt: skip
    if not given:
        return generated_key(ws)
    return check_key(given, var, f"use at least {MIN_SECRET_LENGTH} random "
                      "characters, e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'")  # fmt: skip


def environment(env_file: str | Path | None = None, env: dict[str, str] | None = None
                ) -> dict[str, str]:  # fmt: skip
    """The process environment over the env file (--env-file or NURTURE_ENV_FILE):
    what an operator sets by hand for one run wins over the file."""
    env = dict(os.environ if env is None else env)
    path = _env_path(env_file, env)
    return {**read_env_file(path), **env} if path else env


def _env_path(env_file: str | Path | None, env: dict[str, str]) -> str | Path | None:
    return env_file or env.get(PREFIX + "ENV_FILE")


def _timezone(src: _Source) -> str:
    tz = src.get("timezone") or "UTC"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"NURTURE_TIMEZONE must be an IANA time zone, got {tz!r}") from None
    return tz


def _tracking(src: _Source) -> bool:
    tracking = (src.get("tracking") or "on").lower()
    if tracking not in ("on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"NURTURE_TRACKING must be 'on' or 'off', got {tracking!r}")
    return tracking in ("on", "true", "1")


def _base_url(src: _Source) -> str:
    base_url = (src.get("base_url") or "http://localhost:8000").rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"NURTURE_BASE_URL must start with http:// or https://, got {base_url!r}")
    return base_url


def load_settings(
    workspace: str | Path | None = None,
    env: dict[str, str] | None = None,
    env_file: str | Path | None = None,
) -> Settings:
    """Settings by precedence: the environment (`env`, default os.environ), then the env
    file, then nurture.toml, then the defaults. Every check runs here, before any work."""
    path = _env_path(env_file, dict(os.environ if env is None else env))
    env = environment(env_file, env)
    ws = _workspace(workspace, env)
    src = _Source(env, _read_toml(ws))

    database_url = check_database_url(src.get("database_url") or f"sqlite:///{ws / 'nurture.db'}")
    smtp_url = src.get("smtp_url")
    if smtp_url:
        check_smtp_url(smtp_url)
    redis_url = src.get("redis_url")
    if redis_url:
        check_redis_url(redis_url)
    origins = tuple(o.strip() for o in (src.get("cors_origins") or "").split(",") if o.strip())

    settings = Settings(
        workspace=ws,
        database_url=database_url,
        redis_url=redis_url,
        smtp_url=smtp_url,
        base_url=_base_url(src),
        sender=_sender(src),
        postal_address=src.get("postal_address"),
        api_key=src.get("api_key"),
        timezone=_timezone(src),
        tracking=_tracking(src),
        cors_origins=origins,
        send_rate=src.number("send_rate", float, None, minimum=0.001),
        smtp_concurrency=src.number("smtp_concurrency", int, DEFAULT_SMTP_CONCURRENCY, minimum=1),
        max_per_day=src.number("max_per_day", int, 1, minimum=1),
        sales_webhook_url=src.get("sales_webhook_url"),
        sales_webhook_secret=src.get("sales_webhook_secret"),
        sales_email=src.get("sales_email"),
        requeue_after=src.seconds("requeue_after", DEFAULT_REQUEUE_AFTER),
        resend_after=src.seconds("resend_after", DEFAULT_RESEND_AFTER),
        retry_backoff=src.seconds("retry_backoff", DEFAULT_RETRY_BACKOFF),
        subscribe_limit=_rate_limit(src, "subscribe_limit", DEFAULT_SUBSCRIBE_LIMIT),
        signup_seconds=src.number("signup_seconds", float, DEFAULT_SIGNUP_SECONDS),
        signup_tags=src.names("signup_tags"),
        **dkim_settings(src.get, ws),
        dns_server=src.get("dns_server"),
        **bounce_settings(src.get),
        sunset=load_policy(ws, src.toml),
        secret_key=_key(src, ws),  # last: nothing is written when another setting is wrong
    )
    return _with_warnings(settings, src, path)


def _with_warnings(settings: Settings, src: _Source, env_file: str | Path | None) -> Settings:
    toml_problems, warnings = src.unknown()
    exposed = exposure_warning(env_file) if env_file else None
    return replace(settings, toml_problems=toml_problems,
                   warnings=warnings + ((exposed,) if exposed else ()))  # fmt: skip
