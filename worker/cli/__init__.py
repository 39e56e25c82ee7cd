"""The `imagejobs` command: admin commands against the database (admin.py) and client commands
against a running API (commands.py)."""

from worker.cli.admin import main

__all__ = ["main"]
