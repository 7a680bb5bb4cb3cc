"""Settings from a file of KEY=VALUE lines (`--env-file` / NURTURE_ENV_FILE).

cron starts commands with an almost empty environment and no shell profile, so the
command reads its settings itself. The format is the common one of systemd's
EnvironmentFile and docker's --env-file: one KEY=VALUE a line, blank lines and lines
starting with `#` ignored, the value optionally in single or double quotes, an optional
leading `export `. Nothing is expanded. A malformed line is reported by path and line
number only: it may hold a password.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from nurture.errors import ConfigError

_LINE = re.compile(r"^(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*?)\s*$")


def read_env_file(path: str | Path) -> dict[str, str]:
    """Every KEY=VALUE of the file, in order; a later line wins over an earlier one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"the env file {path} does not exist (--env-file / NURTURE_ENV_FILE)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"cannot read the env file {path}: {reason}") from None
    values: dict[str, str] = {}
    # Lines end at "\n" (and "\r\n") only: str.splitlines() also splits at U+2028,
    # form feeds and other separators a value may hold, and would cut the value there.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(stripped)
        if match is None:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE (e.g. NURTURE_FROM=...)")
        key, value = match["key"], match["value"]
        if value[:1] in ("'", '"'):
            quote = value[0]
            if len(value) < 2 or not value.endswith(quote):
                raise ConfigError(
                    f"{path}:{number}: the value of {key} opens a quote it never closes"
                )
            value = value[1:-1]
        values[key] = value
    return values


def exposure_warning(path: str | Path) -> str | None:
    """A warning when others may read the env file: it holds the secrets."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (f"the env file {path} is readable by others (mode {stat.S_IMODE(mode):o}) and "
            f"holds secrets: chmod 600 {path}")  # fmt: skip
