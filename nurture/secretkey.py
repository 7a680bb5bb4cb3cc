"""The secret key that signs every link: generated once into the workspace, never short."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from nurture.errors import ConfigError

#: File inside the workspace that keeps the generated secret key (mode 0600).
SECRET_FILE = ".nurture-secret"  # noqa: S105 - a file name, not a secret
#: Shortest secret key accepted: anything shorter can be guessed or was cut off.
MIN_SECRET_LENGTH = 32


def check_key(key: str, where: str, fix: str) -> str:
    if len(key) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{where} holds a secret key of {len(key)} characters, fewer than the "
            f"{MIN_SECRET_LENGTH} needed to sign links safely: {fix}"
        )
    return key


def generated_key(workspace: Path) -> str:
    """Generate a random key once and keep it in the workspace, readable by the owner only.

    The key is written whole to a private temporary file, then linked into place:
    `os.link` fails when the file exists, so of several first starts at once exactly one
    key wins and every other process reads that one, complete."""
    path = workspace / SECRET_FILE
    if not path.exists():
        key = secrets.token_urlsafe(48)
        tmp = workspace / f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won: read its key below
        finally:
            tmp.unlink(missing_ok=True)
    fix = "delete it to have a new one generated, or set NURTURE_SECRET_KEY"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:  # a dangling symlink, a folder, no permission
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "it is not text"
        if path.is_symlink() and not path.exists():
            reason = "it is a link to a file that does not exist"
        raise ConfigError(f"cannot read the secret key {path}: {reason}; {fix}") from None
    return check_key(text.strip(), str(path), fix)
