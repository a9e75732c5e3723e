"""The asyncio API: VMs from code, with the CLI's semantics. `cove` (sync) wraps this.

Calls to the daemon's plain HTTP routes run in a thread, so an event loop never waits on
them; exec and copies speak the exec WebSocket directly.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets as token
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cove.client.exec import Command, Input, Sink, run_when_ready
from cove.client.http import Client
from cove.errors import CoveError, VMNotFound
from cove.host.home import prepare_home
from cove.sdk import transfer
from cove.sdk.types import Chunk, ExecResult, LogLine, SnapshotInfo, Spec, VMInfo, log_line
from cove.start.prepare import Overrides, load_with, start_detached, wait_healthy

SpecLike = Spec | str | Path | Mapping[str, Any]
DEFAULT_TIMEOUT = 180.0  # to healthy: a cold boot under TCG with a slow service


def as_spec(spec: SpecLike) -> Spec:
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Mapping):
        return Spec.from_dict(dict(spec))
    return Spec.load(spec)


class VM:
    """A VM the daemon runs, by name. Methods are coroutines; see `cove.VM` for the sync twin."""

    def __init__(self, name: str, client: Client | None = None) -> None:
        self.name = name
        self.client = client or Client()

    def __repr__(self) -> str:
        return f"<cove.aio.VM {self.name!r}>"

    @classmethod
    async def get(cls, name: str) -> VM:
        """The VM called `name`; `cove.VMNotFound` if there is none."""
        vm = cls(name)
        await vm.info()
        return vm

    async def _call(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(getattr(self.client, method), *args)

    async def info(self) -> VMInfo:
        return VMInfo.from_json(await self._call("get", self.name))

    # -- commands ------------------------------------------------------------------------
    async def _run(self, command: Command, sink: Sink) -> int:
        return await run_when_ready(self.client, self.name, command, sink)

    async def exec(self, argv: Sequence[str], *, stdin: Input = None,
                   env: Mapping[str, str] | None = None, cwd: str | None = None,
                   user: str | None = None, timeout: float | None = None,
                   check: bool = False) -> ExecResult:
        """Run argv in the guest and wait for it. On timeout the command's whole process
        group is killed and `cove.ExecTimeout` raised; `check=True` raises `cove.ExecFailed`
        for a non-zero exit."""
        out, err = bytearray(), bytearray()

        async def collect(fd: int, data: bytes) -> None:
            (err if fd == 2 else out).extend(data)

        command = Command(list(argv), dict(env or {}), cwd, user, stdin, timeout)
        code = await self._run(command, collect)
        result = ExecResult(tuple(argv), code, bytes(out), bytes(err))
        return result.check_returncode() if check else result

    def exec_stream(self, argv: Sequence[str], *, stdin: Input = None,
                    env: Mapping[str, str] | None = None, cwd: str | None = None,
                    user: str | None = None, timeout: float | None = None) -> ExecStream:
        """Output chunks as they come (`async for chunk in vm.exec_stream(...)`); the exit
        code is the stream's `returncode` once it ends."""
        return ExecStream(self, Command(list(argv), dict(env or {}), cwd, user, stdin,
                                        timeout))

    # -- files ---------------------------------------------------------------------------
    async def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write `data` to `path` in the guest (parents created, replaced atomically)."""
        result = await self.exec(transfer.put_argv(path, mode), stdin=data)
        if result.returncode:
            raise CoveError(f"cannot write {path} in {self.name}: "
                            f"{result.stderr.decode(errors='replace').strip()}")

    async def get_file(self, path: str, limit: int = transfer.MAX_FILE_READ) -> bytes:
        """The file's bytes (at most `limit`: a guest's file is held in memory here)."""
        out, err = bytearray(), bytearray()

        async def collect(fd: int, data: bytes) -> None:
            target = err if fd == 2 else out
            if len(target) + len(data) > limit:
                raise CoveError(f"{path} in {self.name} is larger than {limit} bytes",
                                "copy it with `cove cp` or vm.copy_out, which stream to disk")
            target.extend(data)

        code = await self._run(Command(["cat", "--", path]), collect)
        if code:
            raise CoveError(f"cannot read {path} in {self.name}: "
                            f"{err.decode(errors='replace').strip()}")
        return bytes(out)

    async def copy_in(self, source: str | Path, dest: str) -> None:
        """`cove cp SOURCE VM:DEST`: a file or a tree, modes and owners kept."""
        source = Path(source)
        errors = bytearray()

        async def collect(_fd: int, data: bytes) -> None:
            errors.extend(data)

        argv = transfer.unpack_argv(dest, source.name)
        code = await self._run(Command(argv, stdin=transfer.packed(source)), collect)
        if code:
            raise CoveError(f"cannot copy {source} to {self.name}:{dest}: "
                            f"{errors.decode(errors='replace').strip() or f'exit {code}'}")

    async def copy_out(self, source: str, dest: str | Path) -> Path:
        """`cove cp VM:SOURCE DEST`; returns where it landed."""
        dest = Path(dest)
        with transfer.staging_beside(dest) as staging:
            code, errors, tops = await self._receive_tree(source, staging)
            if code:
                raise CoveError(f"cannot copy {self.name}:{source}: "
                                f"{errors.decode(errors='replace').strip() or f'exit {code}'}")
            if isinstance(tops, BaseException):
                raise CoveError(f"cannot copy {self.name}:{source}: {tops}") from tops
            return transfer.place(staging, transfer.source_top(source), dest)

    async def _receive_tree(self, source: str, staging: Path
                            ) -> tuple[int, bytes, list[str] | BaseException]:
        read_end, write_end = os.pipe()
        extractor = asyncio.create_task(asyncio.to_thread(
            extract_pipe, read_end, staging, transfer.source_top(source)))
        errors = bytearray()

        async def deliver(fd: int, data: bytes) -> None:
            if fd == 2:
                errors.extend(data)
            elif not extractor.done():
                with contextlib.suppress(BrokenPipeError):
                    await asyncio.to_thread(write_all, write_end, data)

        try:
            code = await self._run(Command(transfer.pack_argv(source)), deliver)
        finally:
            os.close(write_end)
        tops: list[str] | BaseException
        try:
            tops = await extractor
        except (CoveError, OSError, ValueError) as error:  # tarfile's errors are ValueErrors
            tops = error
        return code, bytes(errors), tops

    # -- the VM as a whole -------------------------------------------------------------------
    async def logs(self, follow: bool = False, count: int | None = None,
                   service: str | None = None) -> AsyncIterator[LogLine]:
        entries = self.client.logs(self.name, count, follow, service)
        done = object()
        while (entry := await asyncio.to_thread(next, entries, done)) is not done:
            yield log_line(entry)  # type: ignore[arg-type]

    async def forward(self, host: int, guest: int, tunnel: bool = False) -> dict[str, Any]:
        """Forward host port `host` to guest port `guest` (`cove forward`)."""
        result: dict[str, Any] = await self._call("add_forward", self.name, f"{host}:{guest}",
                                                  tunnel)
        return result

    async def ping(self) -> float:
        """Seconds for one round trip to the guest agent."""
        started = time.perf_counter()
        await self._call("ping", self.name)
        return time.perf_counter() - started

    async def restart(self, timeout: float = 20.0) -> VMInfo:
        return VMInfo.from_json(await self._call("restart", self.name, timeout))

    async def down(self, timeout: float = 20.0) -> None:
        await self._call("down", self.name, timeout)

    async def pause(self) -> VMInfo:
        return VMInfo.from_json(await self._call("state_change", self.name, "pause"))

    async def resume(self) -> VMInfo:
        return VMInfo.from_json(await self._call("state_change", self.name, "resume"))

    async def suspend(self) -> VMInfo:
        return VMInfo.from_json(await self._call("state_change", self.name, "suspend"))

    async def clone(self, count: int = 1, prefix: str | None = None,
                    ports: Sequence[str] = ()) -> list[VM]:
        """`count` running copies of this VM (from a snapshot of it now)."""
        made = await self._call("clone", self.name, count, prefix, tuple(ports))
        return [VM(entry["name"], self.client) for entry in made]

    async def snapshot(self) -> SnapshotInfo:
        """This VM's state now, kept until removed; `from_snapshot` starts VMs from it (also
        after this one is gone). The VM pauses only for the save."""
        return SnapshotInfo.from_json(await self._call("save_snapshot", self.name))


class ExecStream:
    """An exec whose output is read as it comes; `returncode` is set when it ends."""

    def __init__(self, vm: VM, command: Command) -> None:
        self.vm = vm
        self.command = command
        self.returncode: int | None = None

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Chunk]:
        queue: asyncio.Queue[Chunk | None] = asyncio.Queue(16)  # a slow reader slows it

        async def sink(fd: int, data: bytes) -> None:
            await queue.put(Chunk(fd, data))

        async def runner() -> None:
            try:
                self.returncode = await self.vm._run(self.command, sink)
            finally:
                await queue.put(None)

        task = asyncio.create_task(runner())
        try:
            while (chunk := await queue.get()) is not None:
                yield chunk
            await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def extract_pipe(fd: int, staging: Path, top: str) -> list[str]:
    with os.fdopen(fd, "rb") as stream:
        tops = transfer.extract_from(stream, staging, top)
    if not tops:
        raise CoveError("the guest sent an empty archive")
    return tops


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def overrides(name: str | None, ports: Sequence[str | int], env: Mapping[str, str] | None,
              volumes: Sequence[str], shares: Sequence[str], secrets: str | Path | None,
              config: str | Path | None, network: str | None, ephemeral: bool) -> Overrides:
    return Overrides(
        ports=tuple(f"{p}:{p}" if isinstance(p, int) else str(p) for p in ports),
        env=tuple(f"{key}={value}" for key, value in (env or {}).items()),
        name=name, volumes=tuple(volumes), shares=tuple(shares), network=network,
        ephemeral=ephemeral, config=str(Path(config).resolve()) if config else None,
        secrets=str(Path(secrets).resolve()) if secrets else None)


def start_vm(spec: Spec, flags: Overrides, accel: str | None, cold: bool, wait: bool,
             timeout: float, remove_on_failure: bool = False) -> str:
    """Build and start; blocking, so the async API runs it in a thread."""
    prepare_home(private_umask=False)  # a library does not change its caller's umask
    checked = load_with(spec.source, flags)
    client = Client()
    start_detached(client, checked, accel, cold)
    if wait:
        try:
            wait_healthy(client, checked.name, timeout)
        except CoveError:
            if remove_on_failure:  # a sandbox that never came up is not left behind
                with contextlib.suppress(CoveError):
                    client.down(checked.name)
            raise
    return checked.name


async def up(spec: SpecLike, *, name: str | None = None, ports: Sequence[str | int] = (),
             env: Mapping[str, str] | None = None, volumes: Sequence[str] = (),
             shares: Sequence[str] = (), secrets: str | Path | None = None,
             config: str | Path | None = None, network: str | None = None,
             ephemeral: bool = False, detach: bool = True, cold: bool = False,
             wait: bool = True, timeout: float = DEFAULT_TIMEOUT,
             accel: str | None = None, remove_on_failure: bool = False) -> VM:
    """`cove up -d`: start a VM and wait until it is healthy. With `detach=False` the VM is
    stopped when this program exits, as `cove up` without -d stops it on Ctrl-C; with
    `remove_on_failure` a VM that does not become healthy is removed, not left to inspect."""
    flags = overrides(name, ports, env, volumes, shares, secrets, config, network, ephemeral)
    started = await asyncio.to_thread(start_vm, as_spec(spec), flags, accel, cold, wait,
                                      timeout, remove_on_failure)
    vm = VM(started)
    if not detach:
        atexit.register(down_quietly, vm.client, started)
    return vm


def down_quietly(client: Client, name: str) -> None:
    with contextlib.suppress(CoveError):
        client.down(name)


def sandbox_name(spec: Spec) -> str:
    return f"{spec.name[:54]}-{token.token_hex(3)}"


@contextlib.asynccontextmanager
async def sandbox(spec: SpecLike, **options: Any) -> AsyncIterator[VM]:
    """A throwaway VM: a fresh name, ephemeral, warm when a template fits, and removed
    when the block ends, however it ends."""
    checked = as_spec(spec)
    options.setdefault("name", sandbox_name(checked))
    options.setdefault("ephemeral", True)
    options.setdefault("remove_on_failure", True)
    vm = await up(checked, **options)
    try:
        yield vm
    finally:
        with contextlib.suppress(VMNotFound):
            await asyncio.shield(vm.down(timeout=5.0))


async def from_snapshot(snapshot: SnapshotInfo | str, count: int = 1,
                        prefix: str | None = None, ports: Sequence[str] = ()) -> list[VM]:
    """`count` new VMs restored from a snapshot `vm.snapshot()` saved (names PREFIX1...,
    default the saved VM's name and -; ports as `clone`'s)."""
    ident = snapshot.id if isinstance(snapshot, SnapshotInfo) else snapshot
    client = Client()
    made = await asyncio.to_thread(client.clone_snapshot, ident, count, prefix, tuple(ports))
    return [VM(entry["name"], client) for entry in made]


async def ls() -> list[VMInfo]:
    vms = await asyncio.to_thread(Client().list_vms)
    return [VMInfo.from_json(vm) for vm in vms]
