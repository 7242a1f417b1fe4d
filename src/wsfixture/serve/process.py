"""E2B's ``process.Process`` Connect service (its generated code ships with the ``e2b``
package), served on the host: commands started, streamed, fed, signalled, listed and
joined again, each one an SSH channel to the sandbox's workspace (``serve.commands``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.process import process_pb as pb
from protobuf import Oneof

from wsfixture.errors import WsfixtureError
from wsfixture.serve.commands import Command, Output, Spec, signal_line
from wsfixture.serve.envd import START, Context, caller, connect_error
from wsfixture.serve.refusals import NotFound, Refusal
from wsfixture.serve.sandboxes import Sandbox, Sandboxes
from wsfixture.workspaces.commands import shell_line

MAX_PENDING = 8 * 2**20  # bytes of output a client may leave untaken before the reader waits
STALLED_AFTER = 60.0  # seconds a client may take nothing before it is let go
SIGNAL_NAMES = {pb.Signal.SIGKILL: "SIGKILL", pb.Signal.SIGTERM: "SIGTERM"}


class ProcessService:
    """``process.Process``: commands run, listed, fed, signalled and rejoined."""

    def __init__(self, sandboxes: Sandboxes) -> None:
        self.sandboxes = sandboxes

    async def list(self, request: pb.ListRequest, ctx: Context) -> pb.ListResponse:
        sandbox, _ = caller(self.sandboxes, ctx)
        return pb.ListResponse(processes=[_info(c) for c in sandbox.running()])

    async def start(
        self, request: pb.StartRequest, ctx: Context
    ) -> AsyncIterator[pb.StartResponse]:
        sandbox, user = caller(self.sandboxes, ctx)
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
        sandbox, _ = caller(self.sandboxes, ctx)
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
        sandbox, _ = caller(self.sandboxes, ctx)
        command: Command | None = None
        async for message in request:
            event = message.event.value if message.event is not None else None
            if isinstance(event, pb.StreamInputRequest.StartEvent):
                command = self._selected(sandbox, event.process)
            elif isinstance(event, pb.StreamInputRequest.DataEvent) and command is not None:
                await _send(command, event.input)
        return pb.StreamInputResponse()

    async def send_input(self, request: pb.SendInputRequest, ctx: Context) -> pb.SendInputResponse:
        sandbox, _ = caller(self.sandboxes, ctx)
        await _send(self._selected(sandbox, request.process), request.input)
        return pb.SendInputResponse()

    async def send_signal(
        self, request: pb.SendSignalRequest, ctx: Context
    ) -> pb.SendSignalResponse:
        sandbox, _ = caller(self.sandboxes, ctx)
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
        sandbox, _ = caller(self.sandboxes, ctx)
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


DATA: Literal["data"] = "data"
END: Literal["end"] = "end"
STDOUT: Literal["stdout"] = "stdout"
STDERR: Literal["stderr"] = "stderr"


def _started(pid: int) -> pb.ProcessEvent:
    return pb.ProcessEvent(event=Oneof(START, pb.ProcessEvent.StartEvent(pid=pid)))


class _Listener:
    """What a stream of a command's output reads from: a queue its reader thread fills
    from the moment it is made (before ``begin``, for a command just started).

    Bounded: past ``MAX_PENDING`` bytes the client has not taken, the reader thread waits
    (so the command's SSH channel fills, and its writes in the guest block), and a client
    that takes nothing for ``STALLED_AFTER`` seconds is let go: a guest writing without end
    to a slow or gone client never grows the server's memory."""

    def __init__(self, command: Command) -> None:
        self.command = command
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Output] = asyncio.Queue()
        self._room = threading.Condition()
        self._pending = 0
        self._closed = False
        command.subscribe(self._put)

    def _put(self, output: Output) -> None:  # in the command's reader thread
        with self._room:
            waited = 0.0
            while self._pending > MAX_PENDING and not self._closed:
                if waited >= STALLED_AFTER:
                    self._closed = True
                    self.command.unsubscribe(self._put)
                    return
                self._room.wait(1.0)
                waited += 1.0
            if self._closed:
                return
            self._pending += len(output.data)
        with contextlib.suppress(RuntimeError):  # the server's loop has gone
            self.loop.call_soon_threadsafe(self.queue.put_nowait, output)

    def _taken(self, size: int) -> None:
        with self._room:
            self._pending -= size
            self._room.notify_all()

    async def events(self) -> AsyncIterator[pb.ProcessEvent]:
        """Its output as E2B's events, up to its end; a client that goes away stops
        listening (the command goes on: a background one is joined again by PID)."""
        try:
            while True:
                output = await self.queue.get()
                self._taken(len(output.data))
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
            with self._room:
                self._closed = True
                self._room.notify_all()
            self.command.unsubscribe(self._put)
