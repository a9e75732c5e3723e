"""What a VM record from a client must hold before the daemon acts on it.

The CLI makes good records, but the API takes a whole plan, and its strings end up in a
hypervisor's option strings, a kernel command line and the guest's init: a share tag with
a comma, a drive path with `,file=`, a command-line word with a space would each be an
option or argument nobody declared. So every field that reaches a host tool is checked
here against the same shapes the spec checker gives them; a record that breaks one is
refused with the field's name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path

from cove.errors import CoveError
from cove.spec.model import Hypervisor
from cove.spec.settings import ENV_KEY_PATTERN, GUEST_PATH_PATTERN, NETWORK_PATTERN, valid_name
from cove.vm.record import VmRecord

TAG = r"^[A-Za-z0-9_-]{1,36}$"  # share tags and drive ids (plan: share0, vol0, ...)
SERIAL = r"^[A-Za-z0-9_-]{1,20}$"  # virtio-blk serials are at most 20 bytes
WORD = r"^[^\s\0]{1,4096}$"  # one word of the kernel command line
MODULE = r"^[A-Za-z0-9_-]{1,64}$"
VERSION = r"^[A-Za-z0-9._+~-]{1,64}$"
HOST_PATH = r"^/[^\0\n]{0,4095}$"


def refuse(field: str, value: object, shape: str) -> CoveError:
    return CoveError(f"bad VM record: {field} = {value!r:.80} is not {shape}",
                     "records come from `cove up` and the Python API; build this one again")


def expect(field: str, value: object, pattern: str, shape: str) -> None:
    if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
        raise refuse(field, value, shape)


def expect_all(field: str, values: Iterable[object], pattern: str, shape: str) -> None:
    for index, value in enumerate(values):
        expect(f"{field}[{index}]", value, pattern, shape)


def check_record(record: VmRecord) -> None:
    """Raise CoveError naming the first field of `record` that is not as cove makes it."""
    plan = record.plan
    if not valid_name(plan.name):
        raise refuse("plan.name", plan.name, "a valid VM name")
    numbers = (("vcpu", plan.vcpu, 1, 64), ("memory_mib", plan.memory_mib, 64, 1 << 20),
               ("vsock_cid", plan.vsock_cid, 3, 2**32 - 2))
    for key, value, low, high in numbers:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise refuse(f"plan.{key}", value, f"a whole number from {low} to {high}")
    if plan.hypervisor not in {h.value for h in Hypervisor} - {"auto"}:
        raise refuse("plan.hypervisor", plan.hypervisor, "a known hypervisor")
    if plan.agent_transport not in ("serial", "vsock"):
        raise refuse("plan.agent_transport", plan.agent_transport, "serial or vsock")
    expect("plan.network", plan.network, NETWORK_PATTERN, "a network name")
    expect("plan.kernel_version", plan.kernel_version, VERSION, "a kernel version")
    expect_all("plan.cmdline", plan.cmdline, WORD, "one word without spaces")
    expect_all("plan.modules", plan.modules, MODULE, "a module name")
    expect_all("plan.guest_mounts", plan.guest_mounts, r"^[^\0\n]{1,4096}$", "one line")
    for variable, text in plan.init_env.items():
        expect("plan.init_env", variable, ENV_KEY_PATTERN, "a variable name")
        expect(f"plan.init_env.{variable}", text, r"^[^\0]*$", "text without NUL")
    for field, text in (("stack", plan.stack), ("member", plan.member)):
        if text and not valid_name(text):
            raise refuse(f"plan.{field}", text, "a valid name")
    check_storage(record)
    check_ports(record)
    check_artifacts(record)


def check_storage(record: VmRecord) -> None:
    plan = record.plan
    for index, share in enumerate(plan.shares):
        at = f"plan.shares[{index}]"
        expect(f"{at}.tag", share.tag, TAG, "a share tag")
        expect(f"{at}.source", share.source, r"^/[^\0\n,]{0,4095}$",
               "an absolute host path without a comma")
        expect(f"{at}.target", share.target, GUEST_PATH_PATTERN, "an absolute guest path")
        if share.proto not in ("virtiofs", "9p") or not isinstance(share.readonly, bool):
            raise refuse(f"{at}.proto", share.proto, "virtiofs or 9p")
    for index, drive in enumerate(plan.drives):
        at = f"plan.drives[{index}]"
        expect(f"{at}.id", drive.id, TAG, "a drive id")
        expect(f"{at}.serial", drive.serial, SERIAL, "a drive serial")
        expect(f"{at}.path", drive.path, HOST_PATH, "an absolute host path")
        expect(f"{at}.target", drive.target, GUEST_PATH_PATTERN, "an absolute guest path")
        expect(f"{at}.fs", drive.fs, r"^[a-z0-9]{1,16}$", "a file system type")
    for key, path in plan.delivery.items():
        expect(f"plan.delivery.{key}", path, HOST_PATH, "an absolute host path")
    for field, paths in (("nix_outputs", plan.nix_outputs), ("nix_closure", plan.nix_closure)):
        expect_all(f"plan.{field}", paths, r"^/[^\0\n,]{1,4095}$", "a store path")


def check_ports(record: VmRecord) -> None:
    for index, port in enumerate(record.plan.ports):
        at = f"plan.ports[{index}]"
        for key in ("host", "guest"):
            value = getattr(port, key)
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 1 <= value <= 65535:
                raise refuse(f"{at}.{key}", value, "a port from 1 to 65535")
        try:
            ipaddress.ip_address(port.bind)
        except ValueError:
            raise refuse(f"{at}.bind", port.bind, "an IP address") from None


def check_artifacts(record: VmRecord) -> None:
    artifacts = record.artifacts
    for path in (artifacts.kernel.vmlinux, artifacts.initramfs, artifacts.root.path):
        expect("artifacts", str(path), HOST_PATH, "an absolute host path")
        if not Path(path).is_file():
            raise CoveError(f"bad VM record: artifact {path} does not exist",
                            "build it first (`cove build`)")
