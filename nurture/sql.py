"""Small dialect-aware SQL helpers shared by the modules that write."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignoring_conflicts(session: Session, model: Any, index: list[str]) -> Insert:
    """`INSERT … ON CONFLICT DO NOTHING` on the unique index named by its columns."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model).on_conflict_do_nothing(index_elements=index)  # type: ignore[no-any-return]
