"""Stand-in executables for the hypervisors this host cannot run (they need KVM).

Installed on PATH under the real binaries' names (tests/vm/test_launchers.py), each takes the
argv cove's launcher gives, refuses what the real one would refuse (unknown flags, API bodies
off the upstream spec, invalid instance ids), speaks the real control protocol (REST on a
unix socket, hybrid vsock `CONNECT 1024`/`OK n`, `crosvm powerbtn|stop`, `lkvm stop`), writes
the serial console where the real one would, and runs the "guest": cove's agent
(tests/standins/guest.py). It exits when its guest powers off, as a VMM does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web

from tests.standins.cloud_hypervisor import CloudHypervisorStandIn
from tests.standins.firecracker import FirecrackerStandIn
from tests.standins.guest import AGENT_PORT, Guest, serve_relay
from tests.standins.hybrid_vsock import HybridVsockStandIn
from tests.standins.schemas import firecracker_validator, problems

FIRECRACKER_ID = re.compile(r"[A-Za-z0-9-]{1,64}")  # Firecracker's validate_instance_id
# --config-file sections and the swagger definitions their bodies must match
FIRECRACKER_SECTIONS = {"boot-source": "BootSource", "machine-config": "MachineConfiguration",
                        "vsock": "Vsock", "logger": "Logger", "metrics": "Metrics",
                        "drives": "Drive", "network-interfaces": "NetworkInterface"}


def refuse(binary: str, message: str) -> NoReturn:
    print(f"{binary}: {message}", file=sys.stderr)
    raise SystemExit(1)


class Parser(argparse.ArgumentParser):
    """Unknown flags are an error, as in the real tools (exit 1 with the reason)."""

    def error(self, message: str) -> NoReturn:
        refuse(self.prog, message)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def console_line(binary: str, name: str) -> bytes:
    return f"[stand-in {binary}] {name} booted; serial console here\n".encode()


def relay_path(cid: int) -> Path:
    """Where AF_VSOCK (cid, 1024) lands here: a unix socket the test's connector dials."""
    return Path(os.environ["COVE_STANDIN_VSOCK"]) / f"{cid}.sock"


async def serve_rest(app: web.Application, socket: Path) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(socket)).start()
    return runner


def validate_firecracker_config(config: dict[str, Any]) -> None:
    for section, definition in FIRECRACKER_SECTIONS.items():
        bodies = config.get(section, [])
        for body in bodies if isinstance(bodies, list) else [bodies]:
            if errors := problems(firecracker_validator(definition), body):
                refuse("firecracker", f"--config-file {section}: {'; '.join(errors)}")
    unknown = set(config) - set(FIRECRACKER_SECTIONS)
    if unknown:
        refuse("firecracker", f"--config-file: unknown sections {sorted(unknown)}")


async def firecracker(argv: list[str]) -> None:
    parser = Parser(prog="firecracker")
    parser.add_argument("--id", required=True)
    parser.add_argument("--api-sock", required=True)
    parser.add_argument("--config-file", required=True)
    args = parser.parse_args(argv)
    if not FIRECRACKER_ID.fullmatch(args.id):
        refuse("firecracker", f"invalid instance id {args.id!r}: letters, digits and '-' only")
    config = json.loads(Path(args.config_file).read_text())
    validate_firecracker_config(config)
    run = Path(args.api_sock).parent
    guest = Guest(Path(config["boot-source"]["initrd_path"]), run)
    api = FirecrackerStandIn()
    api.config = {f"/{key}": value for key, value in config.items()}
    api.started = True  # --config-file boots at once
    api.on_ctrl_alt_del = guest.stop
    await guest.start()
    sys.stdout.buffer.write(console_line("firecracker", args.id))
    sys.stdout.flush()
    runner = await serve_rest(api.app, Path(args.api_sock))
    async with HybridVsockStandIn(Path(config["vsock"]["uds_path"]), {AGENT_PORT: guest.relay}):
        await guest.wait()
    await runner.cleanup()


async def cloud_hypervisor(argv: list[str]) -> None:
    parser = Parser(prog="cloud-hypervisor")
    parser.add_argument("--api-socket", required=True)
    args = parser.parse_args(argv)
    if not args.api_socket.startswith("path="):
        refuse("cloud-hypervisor", f"--api-socket {args.api_socket!r}: want path=PATH")
    socket = Path(args.api_socket.removeprefix("path="))
    api = CloudHypervisorStandIn()
    done = asyncio.Event()
    guests: list[Guest] = []

    async def boot(config: dict[str, Any]) -> None:
        guest = Guest(Path(config["payload"]["initramfs"]), socket.parent)
        await guest.start()
        guests.append(guest)
        append(Path(config["serial"]["file"]), console_line("cloud-hypervisor", "vm"))
        vsock = HybridVsockStandIn(Path(config["vsock"]["socket"]), {AGENT_PORT: guest.relay})
        await vsock.__aenter__()
        asyncio.get_running_loop().create_task(ended(guest, done))

    def power_button() -> None:
        for guest in guests:
            guest.stop()

    api.on_boot = boot
    api.on_power_button = power_button
    api.on_shutdown = done.set
    runner = await serve_rest(api.app, socket)
    await done.wait()
    await asyncio.sleep(0.05)  # the reply to vmm.shutdown goes out first
    await runner.cleanup()


async def ended(guest: Guest, done: asyncio.Event) -> None:
    await guest.wait()
    done.set()


def key_values(flag: str, text: str, allowed: set[str], binary: str) -> dict[str, str]:
    """crosvm's `key=value,...` option values, with the keys its docs list."""
    pairs = dict(item.partition("=")[::2] for item in text.split(","))
    if unknown := set(pairs) - allowed:
        refuse(binary, f"{flag} {text!r}: unknown keys {sorted(unknown)}")
    return pairs


async def run_with_control(binary: str, name: str, initrd: Path, cid: int, control: Path,
                           serial: Callable[[bytes], None]) -> None:
    """crosvm's and kvmtool's shared shape: a guest on AF_VSOCK (the relay socket here) and
    a control socket their own `powerbtn`/`stop` subcommands talk to."""
    guest = Guest(initrd, initrd.parent)  # the VM's run dir
    await guest.start()
    serial(console_line(binary, name))
    relay = await serve_relay(relay_path(cid), guest)
    done = asyncio.Event()

    async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        word = (await reader.readline()).decode().strip()
        if word == "powerbtn":
            guest.stop()
        elif word == "stop":
            done.set()
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    control.parent.mkdir(parents=True, exist_ok=True)
    server = await asyncio.start_unix_server(command, str(control))
    waiter = asyncio.create_task(ended(guest, done))
    await done.wait()
    waiter.cancel()
    server.close()
    relay.close()
    control.unlink(missing_ok=True)


async def control_command(control: Path, word: str, binary: str) -> None:
    try:
        reader, writer = await asyncio.open_unix_connection(str(control))
    except OSError as error:
        refuse(binary, f"cannot reach {control}: {error}")
    writer.write(f"{word}\n".encode())
    await writer.drain()
    await reader.readline()
    writer.close()


CROSVM_RUN_FLAGS = ("cpus", "mem", "initrd", "params", "socket", "serial", "vsock")
CROSVM_REPEATED = ("block", "shared-dir", "net")


async def crosvm(argv: list[str]) -> None:
    if argv[:1] in (["powerbtn"], ["stop"]):
        await control_command(Path(argv[1]), argv[0], "crosvm")
        return
    if argv[:1] != ["run"]:
        refuse("crosvm", f"unknown subcommand {argv[:1]}")
    parser = Parser(prog="crosvm run")
    for flag in CROSVM_RUN_FLAGS:
        parser.add_argument(f"--{flag}", required=flag != "serial")
    for flag in CROSVM_REPEATED:
        parser.add_argument(f"--{flag}", action="append", default=[])
    parser.add_argument("--no-rng", action="store_true")
    parser.add_argument("kernel")
    args = parser.parse_args(argv[1:])
    serial = key_values("--serial", args.serial, {"type", "path", "num", "console", "hardware",
                                                  "earlycon", "stdin", "name", "input"},
                        "crosvm")
    for block in args.block:
        key_values("--block", block, {"path", "ro", "id", "root", "sparse", "direct",
                                      "block-size", "lock", "async-executor", "packed-queue",
                                      "bootindex", "pci-address"}, "crosvm")
    cid = int(key_values("--vsock", args.vsock, {"cid", "device"}, "crosvm")["cid"])
    path = Path(serial["path"])
    await run_with_control("crosvm", "vm", Path(args.initrd), cid, Path(args.socket),
                           lambda line: append(path, line))


def lkvm_control(name: str) -> Path:
    return Path(os.environ["HOME"]) / ".lkvm" / f"{name}.sock"  # where kvmtool keeps them


async def lkvm(argv: list[str]) -> None:
    if argv[:1] == ["stop"]:
        parser = Parser(prog="lkvm stop")
        parser.add_argument("--name", "-n", required=True)
        await control_command(lkvm_control(parser.parse_args(argv[1:]).name), "stop", "lkvm")
        return
    if argv[:1] != ["run"]:
        refuse("lkvm", f"unknown command {argv[:1]}")
    parser = Parser(prog="lkvm run")
    for flag in ("name", "cpus", "mem", "kernel", "initrd", "params", "console", "vsock"):
        parser.add_argument(f"--{flag}", required=True)
    for flag in ("disk", "9p", "network"):
        parser.add_argument(f"--{flag}", action="append", default=[])
    parser.add_argument("--rng", action="store_true")
    parser.add_argument("--balloon", action="store_true")
    args = parser.parse_args(argv[1:])
    if args.console not in ("serial", "virtio", "hv"):
        refuse("lkvm", f"--console {args.console!r}: serial, virtio or hv")
    for network in args.network:
        key_values("--network", network, {"mode", "tapif", "guest_ip", "host_ip", "guest_mac",
                                          "host_mac", "script", "downscript", "vhost", "fd",
                                          "mq", "trans"}, "lkvm")

    def serial(line: bytes) -> None:  # --console serial: ttyS0 is lkvm's stdio
        sys.stdout.buffer.write(line)
        sys.stdout.flush()

    await run_with_control("lkvm", args.name, Path(args.initrd), int(args.vsock),
                           lkvm_control(args.name), serial)


PROGRAMS: dict[str, Callable[[list[str]], Coroutine[Any, Any, None]]] = {
    "firecracker": firecracker, "cloud-hypervisor": cloud_hypervisor, "crosvm": crosvm,
    "lkvm": lkvm,
}


# What each says to the version query `cove doctor` makes (`lkvm version`, others --version)
VERSIONS = {"firecracker": "Firecracker v1.16.1 (cove's stand-in)",
            "cloud-hypervisor": "cloud-hypervisor v53.0 (cove's stand-in)",
            "crosvm": "crosvm stand-in", "lkvm": "kvm tool stand-in"}


def main(binary: str) -> None:
    if sys.argv[1:] in (["--version"], ["version"]):
        print(VERSIONS[binary])
        return
    asyncio.run(PROGRAMS[binary](sys.argv[1:]))
