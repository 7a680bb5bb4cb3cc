"""Reading an import file: the CSV parsed with the csv module (so no line separator
inside a quoted cell can split a row), headers mapped to columns, every row checked by
the rules of `subscribers add` as it is written (a file that cannot be read at all is
refused before any row is)."""

from __future__ import annotations

import csv
import difflib
import gc
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nurture.content.fields import BUILTIN, Fields
from nurture.errors import NurtureError, SubscriberError
from nurture.people.subscribers import (
    check_timezone,
    clean_first_name,
    normalize_email,
)
from nurture.people.tags import clean_tags

#: Each declared field's column by name, with its value check (Fields.converter).
Converters = dict[str, Callable[[str], str | None]]

#: Columns `subscribers export` writes that an import reads past (re-importing an export
#: works; status and dates are not taken from a file).
EXPORT_ONLY = frozenset({"status", "created_at", "confirmed_at"})


@dataclass(slots=True)
class Row:
    line: int
    email: str
    first_name: str | None = None
    timezone: str | None = None
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Scanned:
    """A file read whole and split into cells. What makes the whole file unreadable (not
    UTF-8, not CSV, no email column) is found here, before any row is written."""

    name: str
    columns: list[str]
    converters: Converters
    #: Each non-blank row's cells, with the line it starts on.
    lines: list[tuple[int, list[str]]]


@dataclass
class Parsed:
    #: Each bad row as `file:line: why`.
    problems: list[str] = field(default_factory=list)
    #: Rows naming an address an earlier row of the same batch named (merged into it).
    repeats: int = 0
    #: Rows naming an address of a batch already handed out, merged by address: written
    #: after every batch, as a known address's new tags and fields.
    late: dict[str, Row] = field(default_factory=dict)


def scan(path: Path, fields: Fields) -> Scanned:
    """The file's rows as cells; a blank row is skipped silently.

    The file is parsed by the csv module over a file opened with newline="": a line
    break inside a quoted cell (or a U+2028 anywhere) stays inside its cell.
    """
    lines: list[tuple[int, list[str]]] = []
    try:
        with no_collections(), path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            columns = _columns(path, next(reader, []), fields)
            end = reader.line_num
            for cells in reader:
                line, end = end + 1, reader.line_num  # a quoted cell may span lines
                if (cells and cells[0].strip()) or any(c.strip() for c in cells):
                    lines.append((line, cells))
    except UnicodeDecodeError:
        raise NurtureError(f"{path} is not UTF-8 text; save it as CSV UTF-8") from None
    except csv.Error as e:
        raise NurtureError(f"{path}:{reader.line_num}: not a CSV file ({e})") from None
    converters = {n: fields.converter(n) for n in columns if n in fields.types}
    return Scanned(path.name, columns, converters, lines)


def checked_batches(scanned: Scanned, parsed: Parsed, size: int) -> Iterator[tuple[list[Row], int]]:
    """Batches of good rows, each address once, checked by the rules of `subscribers add`
    as they are asked for (so an import checks one batch while it writes another), each
    with how many of the file's rows it covers. Bad rows go to `parsed.problems`."""
    seen: dict[str, tuple[Row, int]] = {}
    batch: list[Row] = []
    number = covered = 0
    for line, cells in scanned.lines:
        covered += 1
        try:
            row = _row(line, scanned.columns, cells, scanned.converters)
        except SubscriberError as e:
            parsed.problems.append(f"{scanned.name}:{line}: {e}")
            continue
        first, where = seen.get(row.email, (None, -1))
        if first is None:
            seen[row.email] = (row, number)
            batch.append(row)
        elif where == number:  # the same address twice: one subscriber with both rows' data
            parsed.repeats += 1
            _merge(first, row)
        elif row.email in parsed.late:
            parsed.repeats += 1
            _merge(parsed.late[row.email], row)
        else:
            parsed.late[row.email] = row
        if len(batch) == size:
            yield batch, covered
            batch, covered, number = [], 0, number + 1
    if batch or covered:
        yield batch, covered


def _merge(first: Row, later: Row) -> None:
    first.tags = sorted(set(first.tags) | set(later.tags))
    first.attributes.update(later.attributes)


#: Headers that other tools (spreadsheets, mailing-list exports) write for our columns,
#: as `column_name` makes them.
ALIASES = {"e_mail": "email", "email_address": "email", "e_mail_address": "email",
           "mail": "email", "firstname": "first_name", "first": "first_name",
           "given_name": "first_name", "time_zone": "timezone", "tz": "timezone",
           "tag": "tags"}  # fmt: skip


def column_name(header: str) -> str:
    """A header as a column name: `First Name`, `first-name` and `FIRST_NAME` are all
    `first_name`; `E-mail` and `Email Address` are `email`."""
    name = re.sub(r"[\s\-]+", "_", header.strip().lower()).strip("_")
    return ALIASES.get(name, name)


@contextmanager
def no_collections() -> Iterator[None]:
    """The cycle collector paused: parsing makes three objects a row and no cycles, yet
    each collection would walk every row kept so far (a third of the parse time for
    100,000 rows)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _columns(path: Path, header: list[str], fields: Fields) -> list[str]:
    columns = [column_name(c) for c in header]
    if "email" not in columns:
        if len(columns) == 1 and ";" in columns[0] and "email" in columns[0]:
            raise NurtureError(f"{path.name}: the columns are separated by ';': save the file "
                               "as comma-separated CSV (in Excel: CSV UTF-8)")  # fmt: skip
        raise NurtureError(f"{path.name}:1: the first row must name the columns and include "
                           "'email'")  # fmt: skip
    for raw, name in zip(header, columns, strict=True):
        if columns.count(name) > 1:
            raise NurtureError(f"{path.name}:1: the column {name!r} appears twice")
        if name not in BUILTIN and name not in EXPORT_ONLY and name not in fields.types:
            close = difflib.get_close_matches(name, [*BUILTIN, *fields.types], n=1, cutoff=0.6)
            hint = f" (rename it to {close[0]}?)" if close else ""
            raise NurtureError(f"{path.name}:1: column {raw.strip()[:40]!r} is not a declared field"
                               f"{hint}: declared fields are {fields.declared()} (declare it "
                               "in nurture.toml under [fields])")  # fmt: skip
    return columns


def _row(line: int, columns: list[str], cells: list[str], fields: Converters) -> Row:
    if len(cells) > len(columns):
        raise SubscriberError(f"{len(cells)} cells, but the first row names {len(columns)} "
                              "columns (a comma inside a cell needs \"quotes\")")  # fmt: skip
    values = dict(zip(columns, cells, strict=False))
    # checked in this order, so a row with two faults is reported by its first
    email = normalize_email(values.get("email", ""))
    first_name = clean_first_name(values.get("first_name"))
    zone = (values.get("timezone") or "").strip()
    timezone = check_timezone(zone) if zone else None
    cell = values.get("tags") or ""
    tags = clean_tags(cell.replace(",", " ").split()) if cell.strip() else []
    attributes = {}
    for name, convert in fields.items():
        raw = values.get(name)
        if raw is not None:
            value = convert(raw)
            if value is not None:  # an empty cell sets nothing
                attributes[name] = value
    return Row(line, email, first_name, timezone, tags, attributes)
