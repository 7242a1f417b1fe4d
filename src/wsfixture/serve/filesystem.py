"""E2B's ``filesystem.Filesystem`` Connect service (its generated code ships with the
``e2b`` package), served on the host: stat, list, make, move, remove and watch, each one
shell lines run in the sandbox's workspace as the asking user."""

from __future__ import annotations

import asyncio
import secrets
import shlex
from collections.abc import AsyncIterator, Callable
from typing import Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb as fs
from protobuf import Oneof
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from wsfixture.serve.commands import Spec
from wsfixture.serve.envd import START, Context, caller
from wsfixture.serve.refusals import BadRequest, NotFound
from wsfixture.serve.sandboxes import Sandbox, Sandboxes
from wsfixture.serve.watch import Change, Watcher, listing_line
from wsfixture.workspaces.commands import shell_line

# find's line for one entry: type, size, octal mode, owner, group, mtime, link target, path
ENTRY_FORMAT = r"%y\t%s\t%m\t%M\t%u\t%g\t%T@\t%l\t%p\0"
FILE_TYPES = {"f": fs.FileType.FILE, "d": fs.FileType.DIRECTORY, "l": fs.FileType.SYMLINK}


class FilesystemService:
    """``filesystem.Filesystem``: stat, list, make, move and remove, as the asking user."""

    def __init__(self, sandboxes: Sandboxes) -> None:
        self.sandboxes = sandboxes

    async def _run(self, ctx: Context, line: str) -> str:
        sandbox, user = caller(self.sandboxes, ctx)
        return await asyncio.to_thread(run_as, sandbox, user, line)

    async def _entry(self, ctx: Context, path: str) -> fs.EntryInfo:
        out = await self._run(ctx, f"{_must_exist(path)}; find {_q(path)} -maxdepth 0 "
                                   f"-printf '{ENTRY_FORMAT}'")  # fmt: skip
        entries = read_entries(out)
        if not entries:
            raise ConnectError(Code.NOT_FOUND, f"{path}: no such file or directory")
        return entries[0]

    async def stat(self, request: fs.StatRequest, ctx: Context) -> fs.StatResponse:
        return fs.StatResponse(entry=await self._entry(ctx, request.path))

    async def make_dir(self, request: fs.MakeDirRequest, ctx: Context) -> fs.MakeDirResponse:
        path = _q(request.path)
        await self._run(ctx, f"if [ -e {path} ]; then echo {path}: exists >&2; exit {EXISTS_RC}; "
                             f"fi; mkdir -p -- {path}")  # fmt: skip
        return fs.MakeDirResponse(entry=await self._entry(ctx, request.path))

    async def move(self, request: fs.MoveRequest, ctx: Context) -> fs.MoveResponse:
        source, destination = _q(request.source), _q(request.destination)
        await self._run(ctx, f"{_must_exist(request.source)}; mv -T -- {source} {destination}")
        return fs.MoveResponse(entry=await self._entry(ctx, request.destination))

    async def list_dir(self, request: fs.ListDirRequest, ctx: Context) -> fs.ListDirResponse:
        depth = request.depth or 1
        if depth < 1:
            raise ConnectError(Code.INVALID_ARGUMENT, f"depth: {depth}; 1 or more")
        path = _q(request.path)
        out = await self._run(ctx, f"{_must_exist(request.path)}; [ -d {path} ] || "
                                   f"{{ echo {path}: not a directory >&2; exit 2; }}; "
                                   f"find {path}/ -mindepth 1 -maxdepth {int(depth)} "
                                   f"-printf '{ENTRY_FORMAT}'")  # fmt: skip
        return fs.ListDirResponse(entries=read_entries(out))

    async def remove(self, request: fs.RemoveRequest, ctx: Context) -> fs.RemoveResponse:
        await self._run(ctx, f"{_must_exist(request.path)}; rm -rf -- {_q(request.path)}")
        return fs.RemoveResponse()

    async def _watcher(
        self, ctx: Context, path: str, recursive: bool, listener: Callable[[Change], None] | None
    ) -> tuple[Sandbox, Watcher]:
        sandbox, user = caller(self.sandboxes, ctx)
        await self._run(ctx, f"{_must_exist(path)}; [ -d {_q(path)} ] || "
                             f"{{ echo {_q(path)}: not a directory >&2; exit 2; }}")  # fmt: skip
        line = listing_line(path, recursive)
        watcher = await asyncio.to_thread(
            Watcher, lambda: run_as(sandbox, user, line), path, listener
        )
        return sandbox, watcher

    async def watch_dir(
        self, request: fs.WatchDirRequest, ctx: Context
    ) -> AsyncIterator[fs.WatchDirResponse]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Change] = asyncio.Queue()

        def heard(change: Change) -> None:  # in the watcher's thread
            loop.call_soon_threadsafe(queue.put_nowait, change)

        _, watcher = await self._watcher(ctx, request.path, request.recursive, heard)
        try:
            yield fs.WatchDirResponse(event=Oneof(START, fs.WatchDirResponse.StartEvent()))
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), KEEPALIVE_EVERY)
                except TimeoutError:
                    if watcher.failure is not None:
                        raise ConnectError(Code.UNAVAILABLE, watcher.failure) from None
                    keepalive = fs.WatchDirResponse.KeepAlive()
                    yield fs.WatchDirResponse(event=Oneof(KEEPALIVE, keepalive))
                    continue
                yield fs.WatchDirResponse(event=Oneof(FILESYSTEM, _event(change)))
        finally:
            watcher.stop()

    async def create_watcher(
        self, request: fs.CreateWatcherRequest, ctx: Context
    ) -> fs.CreateWatcherResponse:
        sandbox, watcher = await self._watcher(ctx, request.path, request.recursive, None)
        watcher_id = "w" + secrets.token_hex(8)
        with sandbox.lock:
            sandbox.watchers[watcher_id] = watcher
        return fs.CreateWatcherResponse(watcher_id=watcher_id)

    def _registered(self, ctx: Context, watcher_id: str) -> tuple[Sandbox, Watcher]:
        sandbox, _ = caller(self.sandboxes, ctx)
        with sandbox.lock:
            watcher = sandbox.watchers.get(watcher_id)
        if watcher is None:
            raise ConnectError(Code.NOT_FOUND, f"watcher {watcher_id!r} not found")
        return sandbox, watcher

    async def get_watcher_events(
        self, request: fs.GetWatcherEventsRequest, ctx: Context
    ) -> fs.GetWatcherEventsResponse:
        _, watcher = self._registered(ctx, request.watcher_id)
        if watcher.failure is not None:
            raise ConnectError(Code.UNAVAILABLE, watcher.failure)
        return fs.GetWatcherEventsResponse(events=[_event(c) for c in watcher.take()])

    async def remove_watcher(
        self, request: fs.RemoveWatcherRequest, ctx: Context
    ) -> fs.RemoveWatcherResponse:
        sandbox, watcher = self._registered(ctx, request.watcher_id)
        watcher.stop()
        with sandbox.lock:
            sandbox.watchers.pop(request.watcher_id, None)
        return fs.RemoveWatcherResponse()


KEEPALIVE_EVERY = 30.0  # seconds of a watch with nothing to say before it says so
KEEPALIVE: Literal["keepalive"] = "keepalive"
FILESYSTEM: Literal["filesystem"] = "filesystem"
EVENT_TYPES = {"create": fs.EventType.CREATE, "write": fs.EventType.WRITE,
               "remove": fs.EventType.REMOVE}  # fmt: skip


def _event(change: Change) -> fs.FilesystemEvent:
    return fs.FilesystemEvent(name=change.name, type=EVENT_TYPES[change.kind])


def run_as(sandbox: Sandbox, user: str | None, line: str) -> str:
    """``line`` run in the sandbox as ``user``; its stdout, or E2B's error for its
    failure (the lines' own statuses for a path not there and one there already)."""
    rc, out, err = sandbox.workspace.run(shell_line(line, user=user), 60)
    if rc == NOT_FOUND_RC:
        raise ConnectError(Code.NOT_FOUND, err.strip() or "no such file or directory")
    if rc == EXISTS_RC:
        raise ConnectError(Code.ALREADY_EXISTS, err.strip() or "it exists")
    if rc != 0:
        raise ConnectError(Code.INVALID_ARGUMENT, err.strip() or f"exit status {rc}")
    return out


MAX_FILE = 256 * 1024 * 1024  # bytes of one file through /files, read or written


def read_file(sandbox: Sandbox, path: str, user: str | None) -> bytes:
    """The file at ``path``, read as ``user`` (envd's ``GET /files``), up to ``MAX_FILE``."""
    quoted = _q(path)
    line = shell_line(f"[ -f {quoted} ] || {{ echo {quoted}: no such file >&2; "
                      f"exit {NOT_FOUND_RC}; }}; cat -- {quoted}", user=user)  # fmt: skip
    rc, out, err = sandbox.workspace._session().run(line, 120, MAX_FILE)
    if rc == NOT_FOUND_RC:
        raise NotFound(err.decode(errors="replace").strip())
    if rc != 0:
        raise BadRequest(f"path: {path}: {err.decode(errors='replace').strip()}")
    return out


def write_file(sandbox: Sandbox, path: str, data: bytes, user: str | None) -> None:
    """``data`` written to ``path`` (its directories made) as ``user``, through stdin
    (envd's ``POST /files``)."""
    quoted = _q(path)
    spec = Spec("/bin/sh", ("-c", f'mkdir -p -- "$(dirname -- {quoted})" && cat > {quoted}'),
                user=user)  # fmt: skip
    command = sandbox.start_command(spec, stdin=True)
    errors: list[bytes] = []
    command.subscribe(lambda out: errors.append(out.data) if out.stream == "stderr" else None)
    command.begin(sandbox.ended)
    command.send(data)
    command.close_stdin()
    if not command.wait(120) or command.ended is None or command.ended.exit_code != 0:
        raise BadRequest(f"path: {path}: {b''.join(errors).decode(errors='replace').strip()}")


NOT_FOUND_RC = 44  # the shell lines' own exit statuses for "no such path" and "exists"
EXISTS_RC = 45


def _q(path: str) -> str:
    if not path or "\0" in path:
        raise ConnectError(Code.INVALID_ARGUMENT, f"path: {path!r} is not a path")
    return shlex.quote(path)


def _must_exist(path: str) -> str:
    quoted = _q(path)
    missing = f"{{ echo {quoted}: no such file or directory >&2; exit {NOT_FOUND_RC}; }}"
    return f"[ -e {quoted} ] || [ -L {quoted} ] || {missing}"


def read_entries(out: str) -> list[fs.EntryInfo]:
    """find's ``ENTRY_FORMAT`` records as E2B's entries; a record that does not read as
    one (a name the guest made up to confuse us cannot: it is the last field) is
    skipped."""
    entries = []
    for record in out.split("\0"):
        fields = record.split("\t", 8)
        if len(fields) != 9:
            continue
        kind, size, mode, permissions, owner, group, mtime, target, path = fields
        try:
            seconds = float(mtime)
            entry = fs.EntryInfo(
                name=path.rstrip("/").rsplit("/", 1)[-1] or "/",
                type=FILE_TYPES.get(kind, fs.FileType.UNSPECIFIED),
                path=path.replace("//", "/"),
                size=int(size),
                mode=int(mode, 8),
                permissions=permissions,
                owner=owner,
                group=group,
                modified_time=Timestamp(seconds=int(seconds), nanos=int(seconds % 1 * 1e9)),
                symlink_target=target or None,
                is_symlink=kind == "l",
            )
        except ValueError:
            continue
        entries.append(entry)
    return entries
