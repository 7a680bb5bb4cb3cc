"""`nurture validate`: every problem of a workspace at once, sorted, with file and line."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from nurture.content.lints import lint_workspace
from nurture.content.rendering import Renderer, renderer_for
from nurture.content.sequences import catalog_for
from nurture.content.topics import topic_problems
from nurture.content.winback import winback_problems
from nurture.content.yamlmarks import line_for, load_with_lines
from nurture.errors import ConfigError, SequenceError
from nurture.mailsettings import dkim_private_key, sendgrid_verification_key
from nurture.sender import aligned, sender_domain
from nurture.settings import Settings


def _steps(
    settings: Settings, *, variants: bool = False
) -> Iterator[tuple[str, Any, int, Any, int, Any, int]]:
    """(path, template, its line, subject, its line, preheader, its line) of every step of
    every file (and with `variants`, of every step's variant), also of
    files that failed to load, so a marketer sees template and YAML problems in one run."""
    root = settings.sequences_dir.parent
    for file in sorted(settings.sequences_dir.glob("*.y*ml")):
        shown = str(file.relative_to(root))
        try:
            data, lines = load_with_lines(file.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001, S112 - already reported by the catalog
            continue
        steps = data.get("steps") if isinstance(data, dict) else None
        for i, step in enumerate(steps if isinstance(steps, list) else []):
            if isinstance(step, dict):
                yield (shown, step.get("template"), line_for(lines, ("steps", i, "template")) or 0,
                       step.get("subject"), line_for(lines, ("steps", i, "subject")) or 0,
                       step.get("preheader"), line_for(lines, ("steps", i, "preheader")) or 0)  # fmt: skip
                arms = step.get("variants") if variants else None
                for j, v in enumerate(arms if isinstance(arms, list) else []):
                    at = ("steps", i, "variants", j)
                    if isinstance(v, dict):
                        yield (shown, v.get("template"), line_for(lines, (*at, "template")) or 0,
                               v.get("subject"), line_for(lines, (*at, "subject")) or 0,
                               v.get("preheader"), line_for(lines, (*at, "preheader")) or 0)  # fmt: skip


def summary(settings: Settings, problems: list[SequenceError]) -> str:
    """'3 sequences (1 with errors), 12 steps: 4 errors, 1 warnings', counting every file."""
    files = sorted(settings.sequences_dir.glob("*.y*ml")) if settings.sequences_dir.is_dir() else []
    root = settings.sequences_dir.parent
    shown = {str(f.relative_to(root)) for f in files}
    broken = len(shown & {p.path for p in problems if not p.warning})
    steps = sum(1 for _ in _steps(settings)) if files else 0
    errors = sum(not p.warning for p in problems)
    with_errors = f" ({broken} with errors)" if broken else ""
    return (f"{len(files)} sequences{with_errors}, {steps} steps: "
            f"{errors} errors, {len(problems) - errors} warnings")  # fmt: skip


def _toml_line(settings: Settings, problem: str) -> int | None:
    """The line of nurture.toml that sets the key a problem names."""
    key = problem.split("'")[1] if problem.count("'") >= 2 else ""
    path = settings.workspace / "nurture.toml"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return next((n for n, line in enumerate(lines, start=1)
                 if line.split("=")[0].strip().strip('"') == key), None)  # fmt: skip


def template_problems(settings: Settings, renderer: Renderer) -> list[SequenceError]:
    """The layout's and every step's template, subject and preheader problems (a missing
    template, a syntax error, an unknown variable): what would stop an email being sent."""
    problems = renderer.check_layout()
    for path, template, template_line, subject, subject_line, pre, pre_line in _steps(
        settings, variants=True
    ):
        if isinstance(template, str):
            problems.extend(renderer.check(template, SequenceError(path, template_line, "")))
        if isinstance(subject, str):
            problems.extend(renderer.check_string(subject, path, subject_line))
        if isinstance(pre, str):
            problems.extend(renderer.check_string(pre, path, pre_line, "preheader"))
    return problems


def validate_workspace(
    settings: Settings, fields: Mapping[str, str] | None = None, *, check_links: bool = False
) -> list[SequenceError]:
    """Every problem at once. `fields` are the declared subscriber fields (name → type)
    templates may read; the caller reads them, as content knows nothing of subscribers.
    `check_links` also asks every linked URL whether it answers (see content/lints.py)."""
    problems: list[SequenceError] = []
    if not settings.sequences_dir.is_dir():
        return [SequenceError("sequences", None, "no sequences/ folder in this workspace")]
    catalog = catalog_for(
        settings.sequences_dir, quiet=True
    )  # the command reuses it for its summary
    problems.extend(catalog.problems)
    problems.extend(topic_problems(settings.workspace, catalog))
    problems.extend(winback_problems(settings.sunset, catalog))
    renderer = renderer_for(settings.templates_dir)
    renderer.fields = dict(fields or {})
    problems.extend(template_problems(settings, renderer))
    problems.extend(lint_workspace(settings, renderer, catalog, check_links=check_links))
    problems.extend(SequenceError("nurture.toml", _toml_line(settings, p), p)
                    for p in settings.toml_problems)  # fmt: skip
    if not settings.sender:
        problems.append(SequenceError("nurture.toml", None,
            "NURTURE_FROM is not set: no email can be sent without a sender "
            "(e.g. from = \"Crumb & Co <hello@crumb.example>\")"))  # fmt: skip
    if not settings.postal_address:
        problems.append(SequenceError("nurture.toml", None,
            "NURTURE_POSTAL_ADDRESS is not set: bulk email law (CAN-SPAM) wants a postal "
            "address in every email", warning=True))  # fmt: skip
    problems.extend(dkim_problems(settings))
    if settings.sendgrid_webhook_key is not None:
        try:
            sendgrid_verification_key(settings.sendgrid_webhook_key)
        except ConfigError as e:
            problems.append(SequenceError("nurture.toml", None, str(e)))
    unique = {str(p): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.warning, p.path, p.line or 0, p.message))


def dkim_problems(settings: Settings) -> list[SequenceError]:
    """A DKIM key that cannot sign (an error), and a d= domain that does not align with
    From (a warning: DMARC then passes only through SPF, and Gmail wants both)."""
    if settings.dkim_key is None or settings.dkim_domain is None:
        return []
    problems = []
    try:
        dkim_private_key(settings.dkim_key)
    except ConfigError as e:
        problems.append(SequenceError("nurture.toml", None, str(e)))
    from_domain = sender_domain(settings.sender or "")
    if from_domain and not aligned(settings.dkim_domain, from_domain):
        problems.append(SequenceError("nurture.toml", None,
            f"NURTURE_DKIM_DOMAIN {settings.dkim_domain} does not align with the From "
            f"domain {from_domain}: DMARC needs d= to be {from_domain} or a parent or "
            "subdomain of it", warning=True))  # fmt: skip
    return problems
