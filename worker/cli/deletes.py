"""`imagejobs delete generation|project|workspace ID`: the operator's deletes, run in this
process against DATABASE_URL and the configured storage, in the same order as the API's
(worker/storage/deletes.py) and recorded in imagejobs_deletions as `cli:<user>`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from uuid import UUID

from worker.core import store
from worker.core.config import Settings
from worker.core.db import create_pool
from worker.storage import build_storage, deletes
from worker.storage.base import Storage


def operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except Exception:  # no user name in this environment (a container)
        return "cli:unknown"


async def _delete_project(pool: store.Db, storage: Storage, project_id: UUID, by: str) -> int:
    """Deletes the project now (starting or resuming its recorded delete); generations deleted."""
    project = await store.get_project_for_stream(pool, project_id)
    if project is None:
        raise SystemExit(f"delete: no project {project_id}")
    deletion = await store.start_project_deletion(
        pool, project_id, project.workspace_id, by
    ) or await store.resume_project_deletion(pool, project_id, project.workspace_id)
    if deletion is None:
        raise SystemExit(f"delete: project {project_id} is not being deleted and cannot be")
    await deletes.delete_project(pool, storage, deletion.id)
    done = await store.get_deletion_for_worker(pool, deletion.id)
    if done is None or done.status != "done":
        raise SystemExit(f"delete: project {project_id} still has generations; run it again")
    count = int(done.detail.get("generations", 0))
    print(f"project {project_id}: deleted with {count} generations (deletion {done.id})")
    return count


async def run_delete(settings: Settings, args: argparse.Namespace) -> None:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set")
    storage = build_storage(settings)
    await storage.prepare()
    by = operator()
    try:
        async with create_pool(settings.database_url, min_size=1, max_size=4, name="cli") as pool:
            if args.what == "generation":
                row = await store.get_generation_for_worker(pool, args.id)
                if row is None:
                    raise SystemExit(f"delete: no generation {args.id}")
                deleted = await deletes.delete_generation(
                    pool, storage, row.workspace_id, args.id, by, cascade=args.cascade
                )
                print(
                    f"deleted {len(deleted or [])} generation(s): {', '.join(map(str, deleted or []))}"
                )
            elif args.what == "project":
                await _delete_project(pool, storage, args.id, by)
            else:
                projects = await store.workspace_project_ids(pool, args.id)
                total = 0
                for project_id in projects:
                    total += await _delete_project(pool, storage, project_id, by)
                print(
                    f"workspace {args.id}: {len(projects)} projects and {total} generations "
                    "deleted with their files; see docs/operations.md for the rest of its data"
                )
    except OSError as exc:
        raise SystemExit(
            f"delete: storage failed ({exc}); nothing more was deleted, run it again"
        ) from None
    except deletes.StillRunning as exc:
        raise SystemExit(f"delete: {exc}; run it again shortly") from None
    finally:
        await storage.aclose()


def delete_command(settings: Settings, args: argparse.Namespace) -> None:
    asyncio.run(run_delete(settings, args))


def add_delete_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "delete",
        help="delete a generation, a project or a workspace's projects, files included",
    )
    parser.add_argument("what", choices=("generation", "project", "workspace"))
    parser.add_argument("id", type=UUID, metavar="ID")
    parser.add_argument(
        "--cascade",
        action="store_true",
        help="generation: every version of its history",
    )
    parser.set_defaults(run=delete_command)
