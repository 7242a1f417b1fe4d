"""E2B's in-sandbox API (envd) served on the host: the Connect services ``process.Process``
and ``filesystem.Filesystem`` (their generated code ships with the ``e2b`` package) and
the HTTP ``/files`` routes, each call reaching its sandbox's workspace over SSH.

Which sandbox a call is for comes from the ``E2b-Sandbox-Id`` header, checked with the
sandbox's access token (``X-Access-Token``) before anything runs; which user, from the
``Authorization: Basic user:`` header (E2B's ``user`` is the workspace's own user)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets
import shlex
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from e2b.envd.filesystem import filesystem_pb as fs
from e2b.envd.process import process_pb as pb
from protobuf import Oneof
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from wsfixture.errors import ConfigError, WsfixtureError
from wsfixture.serve.commands import Command, Output, Spec, signal_line
from wsfixture.serve.refusals import BadRequest, NotFound, Paused, Refusal
from wsfixture.serve.sandboxes import Sandbox, Sandboxes
from wsfixture.serve.watch import Change, Watcher, listing_line
from wsfixture.workspaces.commands import shell_line

E2B_DEFAULT_USER = "user"  # E2B's name for the sandbox's own user
SIGNAL_NAMES = {pb.Signal.SIGKILL: "SIGKILL", pb.Signal.SIGTERM: "SIGTERM"}
# find's line for one entry: type, size, octal mode, owner, group, mtime, link target, path
ENTRY_FORMAT = r"%y\t%s\t%m\t%M\t%u\t%g\t%T@\t%l\t%p\0"
FILE_TYPES = {"f": fs.FileType.FILE, "d": fs.FileType.DIRECTORY, "l": fs.FileType.SYMLINK}


def user_of(headers: Mapping[str, str]) -> str | None:
    """The user a call runs as: None for the workspace's own (E2B's ``user``, or none
    named), else the name (``root`` too)."""
    value = headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        name = base64.b64decode(value[6:]).decode().split(":", 1)[0]
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"Authorization: {value!r} is not Basic base64(user:)") from None
    return None if name in ("", E2B_DEFAULT_USER) else name


def sandbox_of(sandboxes: Sandboxes, headers: Mapping[str, str]) -> Sandbox:
    """The sandbox the call names, if the caller holds its access token."""
    sandbox = sandboxes.get(headers.get("e2b-sandbox-id", ""))
    if not _same(headers.get("x-access-token", ""), sandbox.access_token):
        raise PermissionError("X-Access-Token: missing or not this sandbox's")
    if sandbox.paused:
        raise Paused(f"sandbox {sandbox.id} is paused: Sandbox.connect resumes it")
    return sandbox


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def connect_error(exc: BaseException) -> ConnectError:
    """E2B's error for what went wrong: not found, invalid argument, unauthenticated."""
    if isinstance(exc, ConnectError):
        return exc
    if isinstance(exc, NotFound):
        return ConnectError(Code.NOT_FOUND, str(exc))
    if isinstance(exc, BadRequest):
        return ConnectError(Code.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, PermissionError):
        return ConnectError(Code.UNAUTHENTICATED, str(exc))
    if isinstance(exc, Paused):
        return ConnectError(Code.UNAVAILABLE, str(exc))
    if isinstance(exc, ConfigError):  # a field wsfixture's own checks refused
        return ConnectError(Code.INVALID_ARGUMENT, str(exc))
    return ConnectError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")


Context = RequestContext[Any, Any]  # the request's headers are all a service reads of it


def _headers(ctx: Context) -> dict[str, str]:
    return {key.lower(): value for key, value in ctx.request_headers.items()}


class ProcessService:
    """``process.Process``: commands run, listed, fed, signalled and rejoined."""

    def __init__(self, sandboxes: Sandboxes) -> None:
        self.sandboxes = sandboxes

    def _sandbox(self, ctx: Context) -> tuple[Sandbox, str | None]:
        try:
            headers = _headers(ctx)
            return sandbox_of(self.sandboxes, headers), user_of(headers)
        except (WsfixtureError, Refusal, PermissionError) as exc:
            raise connect_error(exc) from None

    async def list(self, request: pb.ListRequest, ctx: Context) -> pb.ListResponse:
        sandbox, _ = self._sandbox(ctx)
        return pb.ListResponse(processes=[_info(c) for c in sandbox.running()])

    async def start(
        self, request: pb.StartRequest, ctx: Context
    ) -> AsyncIterator[pb.StartResponse]:
        sandbox, user = self._sandbox(ctx)
        config = request.process
        if config is None or not config.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd: empty; a program to run")
        spec = Spec(config.cmd, tuple(config.args), dict(config.envs),
                    config.cwd if config.has_field("cwd") else None, user,
                    request.tag if request.has_field("tag") else None)  # fmt: skip
        stdin = request.stdin if request.has_field("stdin") else True
        try:
            command = await asyncio.to_thread(sandbox.start_command, spec, stdin)
        except (WsfixtureError, Refusal) as exc:
            raise connect_error(exc) from None
        listener = _Listener(command)
        command.begin(sandbox.ended)
        yield pb.StartResponse(event=_started(command.pid))
        async for event in listener.events():
            yield pb.StartResponse(event=event)

    async def connect(
        self, request: pb.ConnectRequest, ctx: Context
    ) -> AsyncIterator[pb.ConnectResponse]:
        sandbox, _ = self._sandbox(ctx)
        command = self._selected(sandbox, request.process)
        listener = _Listener(command)
        yield pb.ConnectResponse(event=_started(command.pid))
        async for event in listener.events():
            yield pb.ConnectResponse(event=event)

    async def update(self, request: pb.UpdateRequest, ctx: Context) -> pb.UpdateResponse:
        raise ConnectError(Code.UNIMPLEMENTED, "a PTY's size: wsfixture serves no PTY")

    async def stream_input(
        self, request: AsyncIterator[pb.StreamInputRequest], ctx: Context
    ) -> pb.StreamInputResponse:
        sandbox, _ = self._sandbox(ctx)
        command: Command | None = None
        async for message in request:
            event = message.event.value if message.event is not None else None
            if isinstance(event, pb.StreamInputRequest.StartEvent):
                command = self._selected(sandbox, event.process)
            elif isinstance(event, pb.StreamInputRequest.DataEvent) and command is not None:
                await _send(command, event.input)
        return pb.StreamInputResponse()

    async def send_input(self, request: pb.SendInputRequest, ctx: Context) -> pb.SendInputResponse:
        sandbox, _ = self._sandbox(ctx)
        await _send(self._selected(sandbox, request.process), request.input)
        return pb.SendInputResponse()

    async def send_signal(
        self, request: pb.SendSignalRequest, ctx: Context
    ) -> pb.SendSignalResponse:
        sandbox, _ = self._sandbox(ctx)
        command = self._selected(sandbox, request.process)
        name = SIGNAL_NAMES.get(request.signal)
        if name is None:
            raise ConnectError(Code.INVALID_ARGUMENT,
                               f"signal: {request.signal!r}; SIGKILL or SIGTERM")  # fmt: skip
        # As root: the command may run as another user than the one asking.
        line = shell_line(signal_line(command.pid, name), user="root")
        await asyncio.to_thread(sandbox.workspace.run, line, 30)
        return pb.SendSignalResponse()

    async def close_stdin(
        self, request: pb.CloseStdinRequest, ctx: Context
    ) -> pb.CloseStdinResponse:
        sandbox, _ = self._sandbox(ctx)
        command = self._selected(sandbox, request.process)
        await asyncio.to_thread(command.close_stdin)
        return pb.CloseStdinResponse()

    def _selected(self, sandbox: Sandbox, selector: pb.ProcessSelector | None) -> Command:
        match selector.selector if selector is not None else None:
            case Oneof(field="pid", value=pid):
                try:
                    return sandbox.command(int(pid))
                except NotFound as exc:
                    raise connect_error(exc) from None
            case Oneof(field="tag", value=tag):
                for command in sandbox.running():
                    if command.spec.tag == tag:
                        return command
                raise ConnectError(Code.NOT_FOUND, f"process with tag {tag!r} not found")
        raise ConnectError(Code.INVALID_ARGUMENT, "process: a pid or a tag")


async def _send(command: Command, data: pb.ProcessInput | None) -> None:
    match data.input if data is not None else None:
        case Oneof(field="stdin", value=raw):
            try:
                await asyncio.to_thread(command.send, raw)
            except NotFound as exc:
                raise ConnectError(Code.NOT_FOUND, str(exc)) from None
        case _:
            raise ConnectError(Code.INVALID_ARGUMENT, "input: stdin bytes (no PTY is served)")


def _info(command: Command) -> pb.ProcessInfo:
    spec = command.spec
    config = pb.ProcessConfig(cmd=spec.cmd, args=list(spec.args), envs=dict(spec.envs),
                              cwd=spec.cwd)  # fmt: skip
    return pb.ProcessInfo(config=config, pid=command.pid, tag=spec.tag)


START: Literal["start"] = "start"  # the oneof fields, typed as the generated code wants
DATA: Literal["data"] = "data"
END: Literal["end"] = "end"
STDOUT: Literal["stdout"] = "stdout"
STDERR: Literal["stderr"] = "stderr"


def _started(pid: int) -> pb.ProcessEvent:
    return pb.ProcessEvent(event=Oneof(START, pb.ProcessEvent.StartEvent(pid=pid)))


class _Listener:
    """What a stream of a command's output reads from: a queue its reader thread fills
    from the moment it is made (before ``begin``, for a command just started)."""

    def __init__(self, command: Command) -> None:
        self.command = command
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Output] = asyncio.Queue()
        command.subscribe(self._put)

    def _put(self, output: Output) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, output)

    async def events(self) -> AsyncIterator[pb.ProcessEvent]:
        """Its output as E2B's events, up to its end; a client that goes away stops
        listening (the command goes on: a background one is joined again by PID)."""
        try:
            while True:
                output = await self.queue.get()
                if output.stream == "end":
                    end = pb.ProcessEvent.EndEvent(exit_code=output.exit_code,
                                                   exited=output.exit_code >= 0,
                                                   status=output.status)  # fmt: skip
                    yield pb.ProcessEvent(event=Oneof(END, end))
                    return
                which = Oneof(STDOUT, output.data) if output.stream == "stdout" else Oneof(
                    STDERR, output.data)  # fmt: skip
                yield pb.ProcessEvent(event=Oneof(DATA, pb.ProcessEvent.DataEvent(output=which)))
        finally:
            self.command.unsubscribe(self._put)


class FilesystemService:
    """``filesystem.Filesystem``: stat, list, make, move and remove, as the asking user."""

    def __init__(self, sandboxes: Sandboxes) -> None:
        self.sandboxes = sandboxes

    def _caller(self, ctx: Context) -> tuple[Sandbox, str | None]:
        try:
            headers = _headers(ctx)
            return sandbox_of(self.sandboxes, headers), user_of(headers)
        except (WsfixtureError, Refusal, PermissionError) as exc:
            raise connect_error(exc) from None

    async def _run(self, ctx: Context, line: str) -> str:
        sandbox, user = self._caller(ctx)
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
        sandbox, user = self._caller(ctx)
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
        sandbox, _ = self._caller(ctx)
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
