"""The synchronous API (`import cove`): each call runs its `cove.aio` twin on one event loop
that a daemon thread keeps, so it works from plain scripts and from inside other loops."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from cove.sdk import aio
from cove.sdk.types import Chunk, ExecResult, LogLine, SnapshotInfo, VMInfo

T = TypeVar("T")


class Portal:
    """One private event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    def the_loop(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self.loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="cove-api", daemon=True).start()
                self.loop = loop
            return self.loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.the_loop())
        try:
            return future.result()
        except BaseException:  # Ctrl-C here cancels the work there (an exec is killed)
            future.cancel()
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        done = object()

        async def step() -> Any:
            try:
                return await agen.__anext__()
            except StopAsyncIteration:
                return done

        try:
            while (item := self.run(step())) is not done:
                yield item
        finally:
            closer = getattr(agen, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    self.run(closer())


PORTAL = Portal()


class VM:
    """A VM the daemon runs, by name: `cove.up(...)`, `cove.VM.get(name)`."""

    def __init__(self, name: str) -> None:
        self.twin = aio.VM(name)

    @property
    def name(self) -> str:
        return self.twin.name

    def __repr__(self) -> str:
        return f"<cove.VM {self.name!r}>"

    @classmethod
    def get(cls, name: str) -> VM:
        """The VM called `name`; `cove.VMNotFound` if there is none."""
        vm = cls(name)
        vm.info()
        return vm

    def info(self) -> VMInfo:
        return PORTAL.run(self.twin.info())

    def exec(self, argv: Sequence[str], *, stdin: bytes | None = None,
             env: Mapping[str, str] | None = None, cwd: str | None = None,
             user: str | None = None, timeout: float | None = None,
             check: bool = False) -> ExecResult:
        return PORTAL.run(self.twin.exec(argv, stdin=stdin, env=env, cwd=cwd, user=user,
                                         timeout=timeout, check=check))

    def exec_stream(self, argv: Sequence[str], *, stdin: bytes | None = None,
                    env: Mapping[str, str] | None = None, cwd: str | None = None,
                    user: str | None = None, timeout: float | None = None) -> ExecStream:
        return ExecStream(self.twin.exec_stream(argv, stdin=stdin, env=env, cwd=cwd,
                                                user=user, timeout=timeout))

    def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        PORTAL.run(self.twin.put_file(path, data, mode))

    def get_file(self, path: str) -> bytes:
        return PORTAL.run(self.twin.get_file(path))

    def copy_in(self, source: str | Path, dest: str) -> None:
        PORTAL.run(self.twin.copy_in(source, dest))

    def copy_out(self, source: str, dest: str | Path) -> Path:
        return PORTAL.run(self.twin.copy_out(source, dest))

    def logs(self, follow: bool = False, count: int | None = None,
             service: str | None = None) -> Iterator[LogLine]:
        return PORTAL.iterate(self.twin.logs(follow, count, service))

    def forward(self, host: int, guest: int, tunnel: bool = False) -> dict[str, Any]:
        return PORTAL.run(self.twin.forward(host, guest, tunnel))

    def ping(self) -> float:
        return PORTAL.run(self.twin.ping())

    def restart(self, timeout: float = 20.0) -> VMInfo:
        return PORTAL.run(self.twin.restart(timeout))

    def down(self, timeout: float = 20.0) -> None:
        PORTAL.run(self.twin.down(timeout))

    def pause(self) -> VMInfo:
        return PORTAL.run(self.twin.pause())

    def resume(self) -> VMInfo:
        return PORTAL.run(self.twin.resume())

    def suspend(self) -> VMInfo:
        return PORTAL.run(self.twin.suspend())

    def clone(self, count: int = 1, prefix: str | None = None,
              ports: Sequence[str] = ()) -> list[VM]:
        return [VM(vm.name) for vm in PORTAL.run(self.twin.clone(count, prefix, ports))]

    def snapshot(self) -> SnapshotInfo:
        """This VM's state now, kept until removed (see `cove.aio.VM.snapshot`)."""
        return PORTAL.run(self.twin.snapshot())


class ExecStream:
    """`for chunk in vm.exec_stream(...)`: output as it comes; then `returncode`."""

    def __init__(self, twin: aio.ExecStream) -> None:
        self.twin = twin

    def __iter__(self) -> Iterator[Chunk]:
        return PORTAL.iterate(self.twin.__aiter__())

    @property
    def returncode(self) -> int | None:
        return self.twin.returncode


def up(spec: aio.SpecLike, *, name: str | None = None, ports: Sequence[str | int] = (),
       env: Mapping[str, str] | None = None, volumes: Sequence[str] = (),
       shares: Sequence[str] = (), secrets: str | Path | None = None,
       config: str | Path | None = None, network: str | None = None,
       ephemeral: bool = False, detach: bool = True, cold: bool = False, wait: bool = True,
       timeout: float = aio.DEFAULT_TIMEOUT, accel: str | None = None,
       remove_on_failure: bool = False) -> VM:
    """`cove up -d` from code: start a VM, wait until it is healthy (see `cove.aio.up`)."""
    return VM(PORTAL.run(aio.up(
        spec, name=name, ports=ports, env=env, volumes=volumes, shares=shares,
        secrets=secrets, config=config, network=network, ephemeral=ephemeral, detach=detach,
        cold=cold, wait=wait, timeout=timeout, accel=accel,
        remove_on_failure=remove_on_failure)).name)


@contextlib.contextmanager
def sandbox(spec: aio.SpecLike, **options: Any) -> Iterator[VM]:
    """A throwaway VM, removed when the block ends however it ends; keywords as `up`'s."""
    manager = aio.sandbox(spec, **options)
    vm = VM(PORTAL.run(manager.__aenter__()).name)
    try:
        yield vm
    except BaseException as error:
        if not PORTAL.run(manager.__aexit__(type(error), error, error.__traceback__)):
            raise
    else:
        PORTAL.run(manager.__aexit__(None, None, None))


def from_snapshot(snapshot: SnapshotInfo | str, count: int = 1, prefix: str | None = None,
                  ports: Sequence[str] = ()) -> list[VM]:
    """New VMs restored from a saved snapshot (see `cove.aio.from_snapshot`)."""
    return [VM(vm.name) for vm in PORTAL.run(aio.from_snapshot(snapshot, count, prefix, ports))]


def ls() -> list[VMInfo]:
    return PORTAL.run(aio.ls())


__all__ = ["VM", "ExecStream", "from_snapshot", "ls", "sandbox", "up"]
