"""Whether this process can do its work: the database answers, and Redis when it is set.

What `GET /healthz` reports, for load balancers and uptime checks: each part "ok" or
"unreachable", never an exception, so the answer itself says what is down.
"""

from __future__ import annotations

import logging

from sqlalchemy import text

from nurture.journeys.versions import record_workspace
from nurture.queue import queue_depth
from nurture.settings import Settings
from nurture.store.engine import dispose_all, get_engine, session_scope

log = logging.getLogger(__name__)


def health(settings: Settings) -> dict[str, object]:
    """`status` is "ok" only when every part is; `queue_depth` is None in embedded mode
    (no queue) or when Redis does not answer."""
    body: dict[str, object] = {
        "status": "ok", "database": "ok",
        "broker": "embedded" if settings.embedded else "ok", "queue_depth": None,
    }  # fmt: skip
    try:
        with session_scope(settings) as session:
            session.execute(text("SELECT 1"))
    except Exception as e:
        log.warning("health check: database unreachable: %s", e)
        body["database"] = body["status"] = "unreachable"
    if not settings.embedded:
        try:
            body["queue_depth"] = queue_depth(settings)
        except Exception as e:
            log.warning("health check: Redis unreachable: %s", e)
            body["broker"] = body["status"] = "unreachable"
    return body


def check_database(settings: Settings) -> None:
    """Reach the database once (a SQLite file is upgraded), then let go of every pooled
    connection: run before forking workers, a wrong URL is one clear ConfigError rather
    than every worker failing to boot, and no worker inherits a socket. The sequences
    it will run with are recorded for `nurture plan`."""
    get_engine(settings)
    record_workspace(settings)
    dispose_all()
