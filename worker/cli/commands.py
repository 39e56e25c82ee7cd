"""The CLI's client commands: generate, status, projects, retry, cancel (against a running API)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import webbrowser
from collections.abc import Callable, Coroutine
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from worker.cli.client import DEFAULT_URL, TERMINAL, ApiClient, ClientError, GenerationEvent
from worker.core.config import ClientSettings, load

# A stream that ends without a terminal event (the API restarting) is opened again this often.
MAX_RECONNECTS = 5
EXIT_FAILED = 1
EXIT_ERROR = 2


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=None, help=f"the API (default IMAGEJOBS_URL or {DEFAULT_URL})"
    )
    parser.add_argument("--api-key", default=None, help="default IMAGEJOBS_API_KEY")


def _client(args: argparse.Namespace) -> ApiClient:
    client = load(ClientSettings)
    return ApiClient(args.url or client.url, args.api_key or client.api_key)


def run_client_command(
    command: Callable[[argparse.Namespace, Console], Coroutine[Any, Any, int]],
    args: argparse.Namespace,
) -> None:
    """Runs `command`; a ClientError is one line on stderr and exit code 2, never a traceback."""
    console = Console(highlight=False)
    try:
        code: int = asyncio.run(command(args, console))
    except ClientError as exc:
        Console(stderr=True, highlight=False).print(f"[red]error:[/red] {exc}")
        code = EXIT_ERROR
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _describe(generation: dict[str, Any]) -> str:
    line = f"{generation['id']}  {generation['status']:<10} {generation['progress']:>3}%  {generation['provider']}/{generation['model']}"
    if generation.get("result_image_url"):
        line += f"\n  result: {generation['result_image_url']}"
    if generation.get("error_message"):
        line += f"\n  error: {generation['error_code']}: {generation['error_message']}"
    if generation.get("error_resolution"):
        line += f"\n  what to do: {generation['error_resolution']}"
    return line


async def generate(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as client:
        project_id = args.project or await client.default_project()
        body: dict[str, Any] = {"project_id": project_id, "prompt": args.prompt}
        if args.provider:
            body["provider"] = args.provider
        if args.size:
            body["prompt_spec"] = {"base_prompt": args.prompt, "size": args.size}
            del body["prompt"]
        created = await client.request("POST", "/v1/generations", body)
        generation_id = str(created["id"])
        console.print(
            f"generation {generation_id} queued ({created['provider']}/{created['model']})"
        )
        if not (args.watch or args.open):
            return 0
        final = await _watch(client, generation_id, console)
        if final.status != "completed":
            console.print(
                f"[red]{final.status}[/red]: {final.error_code}: {final.error_message}",
                soft_wrap=True,
            )
            if final.error_resolution:
                console.print(f"what to do: {final.error_resolution}", soft_wrap=True)
            return EXIT_FAILED
        console.print(f"[green]completed[/green]: {final.result_image_url}", soft_wrap=True)
        if args.open and final.result_image_url:
            webbrowser.open(final.result_image_url)
        return 0


async def _watch(client: ApiClient, generation_id: str, console: Console) -> GenerationEvent:
    """Follows the generation's SSE stream to its end: a live bar on a terminal, and off one (CI,
    a pipe) the same bar printed as a line per change."""
    live = console.is_terminal
    with Progress(
        TextColumn("{task.fields[status]:<10}"),
        BarColumn(bar_width=40),
        TaskProgressColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=not live,
    ) as progress:
        task = progress.add_task("Waiting in queue", total=100, status="pending")
        last: GenerationEvent | None = None
        for _ in range(MAX_RECONNECTS + 1):
            async for event in client.events(generation_id):
                last = event
                label = event.label or event.step
                progress.update(
                    task, completed=event.progress, description=label, status=event.status
                )
                if not live:
                    console.print(_bar_line(event.status, event.progress, label))
            if last is not None and last.status in TERMINAL:
                return last
            await asyncio.sleep(1)
    raise ClientError(f"the event stream of {generation_id} kept ending before the generation did")


def _bar_line(status: str, percent: int, label: str) -> Table:
    line = Table.grid(padding=(0, 1))
    line.add_row(
        Text(f"{status:<10}"),
        ProgressBar(total=100, completed=percent, width=40),
        Text(f"{percent:>3}%"),
        Text(label),
    )
    return line


async def status(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as client:
        generation = await client.request("GET", f"/v1/generations/{args.id}")
    if args.json:
        print(json.dumps(generation, indent=2))
    else:
        console.print(_describe(generation), soft_wrap=True)
    return 0


async def projects(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as client:
        rows = await client.projects()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for project in rows:
        console.print(
            f"{project['id']}  {project['status']:<10} {project['completed_count']}/"
            f"{project['image_count']} ready  {project['name']}"
        )
    if not rows:
        console.print("no projects yet")
    return 0


async def retry(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as client:
        generation = await client.request("POST", f"/v1/generations/{args.id}/retry")
    console.print(_describe(generation), soft_wrap=True)
    return 0


async def cancel(args: argparse.Namespace, console: Console) -> int:
    async with _client(args) as client:
        generation = await client.request("POST", f"/v1/generations/{args.id}/cancel")
    console.print(_describe(generation), soft_wrap=True)
    return 0


def add_commands(commands: Any) -> None:
    """Registers the client commands on the `imagejobs` subparsers."""
    gen = commands.add_parser("generate", help="submit a generation to a running API")
    gen.add_argument("prompt")
    gen.add_argument("--provider", default=None, help="openai, google, fal or local")
    gen.add_argument("--project", default=None, help="default: the newest project (or a new one)")
    gen.add_argument("--size", default=None, help="WIDTHxHEIGHT, e.g. 1024x1024")
    gen.add_argument("--watch", action="store_true", help="follow it live with a progress bar")
    gen.add_argument(
        "--open", action="store_true", help="open the result when done (implies --watch)"
    )
    add_client_arguments(gen)
    gen.set_defaults(client_command=generate)

    st = commands.add_parser("status", help="a generation's status")
    st.add_argument("id")
    st.add_argument("--json", action="store_true")
    add_client_arguments(st)
    st.set_defaults(client_command=status)

    pr = commands.add_parser("projects", help="the workspace's projects with their counters")
    pr.add_argument("--json", action="store_true")
    add_client_arguments(pr)
    pr.set_defaults(client_command=projects)

    for name, command, text in (
        ("retry", retry, "run a failed generation again"),
        ("cancel", cancel, "cancel a pending or processing generation"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("id")
        add_client_arguments(sub)
        sub.set_defaults(client_command=command)
