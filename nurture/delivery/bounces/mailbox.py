"""Bounces from a mailbox: a local Maildir or an IMAP folder, safe to read from two
hosts at once.

A Maildir message is claimed by renaming it from new/ to cur/ (atomic: one host wins);
an IMAP message may be read by both hosts, and the key kept in `bounce_messages` makes
the second a no-op. What was handled is flagged \\Seen and moved to a `Processed`
folder when the mailbox has one; nothing is deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from imapclient import IMAPClient

from nurture.delivery.bounces.handling import Handled, Tally, handle_message
from nurture.delivery.bounces.reading import UnreadableMessage
from nurture.errors import ConfigError
from nurture.settings import Settings

#: Where handled IMAP messages go, when the mailbox has such a folder.
PROCESSED_FOLDER = "Processed"
#: Messages fetched from IMAP per run: a cron job comes back for the rest.
IMAP_BATCH = 500


def _handle(settings: Settings, raw: bytes) -> Handled:
    try:
        return handle_message(settings, raw)
    except UnreadableMessage:
        return Handled("not a bounce")


def fetch_maildir(settings: Settings, folder: Path) -> Tally:
    """Handle every message in `folder`/new, each claimed by its move to cur/ (flag S).
    A database failure puts the message back in new/ and stops, for the next run."""
    new, cur = folder / "new", folder / "cur"
    if not new.is_dir() or not cur.is_dir():
        raise ConfigError(f"{folder} is not a Maildir (it needs new/ and cur/)")
    fetched = Tally()
    for entry in sorted(os.listdir(new)):
        if entry.startswith("."):
            continue
        claimed = cur / f"{entry.split(':')[0]}:2,S"
        try:
            os.rename(new / entry, claimed)  # the claim: only one host's rename succeeds
        except FileNotFoundError:
            continue
        try:
            fetched.add(_handle(settings, claimed.read_bytes()))
        except BaseException:
            os.rename(claimed, new / entry)  # not handled: back for the next run
            raise
    return fetched


@dataclass(frozen=True)
class ImapPlace:
    secure: bool
    host: str
    port: int
    user: str
    password: str
    folder: str


def imap_place(url: str) -> ImapPlace:
    """`imaps://user:pass@host[:port]/FOLDER` (or imap:// on a trusted network)."""
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
        raise ConfigError(
            f"NURTURE_BOUNCE_IMAP_URL must look like imaps://user:password@host/INBOX, got "
            f"a {parts.scheme or 'schemeless'} URL"
        )
    secure = parts.scheme == "imaps"
    return ImapPlace(secure, parts.hostname, parts.port or (993 if secure else 143),
                     unquote(parts.username), unquote(parts.password or ""),
                     unquote(parts.path.lstrip("/")) or "INBOX")  # fmt: skip


def fetch_imap(settings: Settings) -> Tally:
    """Handle the unseen messages of the IMAP folder in NURTURE_BOUNCE_IMAP_URL."""
    if not settings.bounce_imap_url:
        raise ConfigError("NURTURE_BOUNCE_IMAP_URL is not set: name the bounce mailbox, e.g. "
                          "imaps://bounces:secret@mail.crumb.example/INBOX")  # fmt: skip
    place = imap_place(settings.bounce_imap_url)
    fetched = Tally()
    with IMAPClient(place.host, port=place.port, ssl=place.secure, timeout=30) as client:
        client.login(place.user, place.password)
        client.select_folder(place.folder)
        processed = client.folder_exists(PROCESSED_FOLDER)
        uids = client.search(["UNSEEN"])[:IMAP_BATCH]
        for uid, data in client.fetch(uids, ["BODY.PEEK[]"]).items():
            fetched.add(_handle(settings, data[b"BODY[]"]))
            client.add_flags([uid], [b"\\Seen"])
            if processed:
                client.move([uid], PROCESSED_FOLDER)
    return fetched
