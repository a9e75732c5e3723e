"""Private networks: a Linux bridge with NAT, a tap per VM, addresses given out by cove, and
names resolved by a dnsmasq on the bridge (so `web` reaches `db` by name). Needs root."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cove.errors import die
from cove.host.fsutil import read_json, write_atomic, write_json
from cove.host.home import Home
from cove.host.proc import require_tool, run
from cove.spec.settings import NETWORK_PATTERN
from cove.vmm.common import tap_name

RESERVED = ("user", "none")


@dataclass(frozen=True)
class Network:
    name: str
    subnet: str
    bridge: str
    gateway: str

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


@dataclass(frozen=True)
class Attachment:
    network: Network
    address: str
    tap: str

    def init_env(self) -> dict[str, str]:
        return {"COVE_IP": f"{self.address}/{self.network.prefix}",
                "COVE_GATEWAY": self.network.gateway, "COVE_DNS": self.network.gateway}


def hosts_file(directory: Path) -> Path:
    """Where dnsmasq reads the VMs' names: it drops to `nobody`, which may not traverse the
    cove home, so the file (names and addresses only) lives under /run."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return Path("/run/cove-dns") / digest / "hosts"


def root_problem(network: str) -> str | None:
    """What in a VM's network needs root that this user lacks: said up front by `cove
    check`, `cove run` and `cove up`, before anything is built."""
    if network in ("user", "none") or os.geteuid() == 0:
        return None
    return (f'network = "{network}" is a bridge network (`cove network create`), which needs '
            "root (bridges, taps and NAT rules)")


def require_root() -> None:
    if os.geteuid() != 0:
        die("cove networks need root (bridges, taps and NAT rules)",
            'run cove as root, or use network = "user" (no root needed)')


def network_dir(name: str, home: Path | None = None) -> Path:
    return Home(home).networks / name


def load_network(name: str, home: Path | None = None) -> Network:
    if not re.fullmatch(NETWORK_PATTERN, name):
        die(f"{name!r} is not a valid network name", "see `cove network ls`")
    path = network_dir(name, home) / "network.json"
    if not path.exists():
        die(f"no network named {name!r}",
            f"create it with: cove network create {name} --subnet 10.77.0.0/24")
    return Network(**read_json(path, f"network {name}", f"remove {path.parent} and create "
                                                         "the network again"))


def list_networks(home: Path | None = None) -> list[Network]:
    return [Network(**read_json(p, f"network {p.parent.name}",
                                f"remove {p.parent} and create the network again"))
            for p in sorted((Home(home).networks).glob("*/network.json"))]


def parse_subnet(name: str, subnet: str) -> ipaddress.IPv4Network:
    if not re.fullmatch(NETWORK_PATTERN, name) or name in RESERVED:
        die(f"{name!r} is not a valid network name",
            "use up to 11 lower-case letters, digits, '-' or '_' (not user or none)")
    try:
        network = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as error:
        die(f"--subnet {subnet}: {error}", "write it like 10.77.0.0/24")
    if network.prefixlen > 29:
        die(f"--subnet {subnet} is too small", "use /29 or larger")
    return network


def nat_rules(network: Network) -> str:
    """nftables script (from validated values only) masquerading the subnet's traffic out."""
    table = f"cove_{network.name.replace('-', '_')}"
    return (f"table ip {table} {{\n"
            f"  chain postrouting {{\n"
            f"    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {network.subnet} oifname != \"{network.bridge}\" masquerade\n"
            f"  }}\n}}\n")


def create_network(name: str, subnet: str, home: Path | None = None) -> Network:
    require_root()
    parsed = parse_subnet(name, subnet)
    directory = network_dir(name, home)
    if directory.exists():
        die(f"a network named {name!r} exists already", "see `cove network ls`")
    network = Network(name, str(parsed), f"cb-{name}", str(next(parsed.hosts())))
    steps: list[list[str]] = []
    try:
        run(["ip", "link", "add", network.bridge, "type", "bridge"], what="ip link add")
        steps.append(["ip", "link", "del", network.bridge])
        run(["ip", "addr", "add", f"{network.gateway}/{parsed.prefixlen}", "dev",
             network.bridge], what="ip addr add")
        run(["ip", "link", "set", network.bridge, "up"], what="ip link set up")
        enable_forwarding(home)
        run(["nft", "-f", "-"], stdin=nat_rules(network).encode(), what="nft")
        steps.append(["nft", "delete", "table", "ip", f"cove_{name.replace('-', '_')}"])
        directory.mkdir(parents=True, mode=0o700)
        hosts = hosts_file(directory)
        hosts.parent.mkdir(parents=True, exist_ok=True)
        for folder in (hosts.parent, hosts.parent.parent):
            folder.chmod(0o755)
        write_atomic(hosts, "", mode=0o644)  # dnsmasq (as nobody) reads it
        write_json(directory / "network.json", asdict(network))
        start_dns(network, directory)
    except BaseException:
        for undo in reversed(steps):  # nothing half-made stays behind
            subprocess.run(undo, capture_output=True, check=False)
        with contextlib.suppress(OSError):
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()
        raise
    return network


def start_dns(network: Network, directory: Path) -> None:
    """dnsmasq answers the VMs' names (from the hosts file cove keeps) on the gateway."""
    run(["dnsmasq", f"--interface={network.bridge}", "--bind-interfaces",
         f"--listen-address={network.gateway}", "--except-interface=lo", "--no-resolv",
         "--no-hosts", f"--addn-hosts={hosts_file(directory)}",
         f"--pid-file={directory / 'dnsmasq.pid'}", "--port=53"], what="dnsmasq")


def remove_network(name: str, home: Path | None = None) -> None:
    require_root()
    network = load_network(name, home)
    directory = network_dir(name, home)
    leases = read_leases(directory)
    if leases:
        die(f"network {name!r} still has VMs: {', '.join(sorted(leases))}",
            "stop them first (cove down)")
    signal_dns(directory, signal.SIGTERM)
    subprocess.run(["nft", "delete", "table", "ip", f"cove_{name.replace('-', '_')}"],
                   capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", network.bridge], capture_output=True, check=False)
    hosts = hosts_file(directory)
    hosts.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        hosts.parent.rmdir()
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    if not list_networks(home):
        restore_forwarding(home)


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def forwarding_memo(home: Path | None) -> Path:
    return Home(home).networks / "ip_forward.before"


def enable_forwarding(home: Path | None) -> None:
    """Networks need the host to route: remember what ip_forward was before the first
    network, so removing the last one puts it back."""
    memo = forwarding_memo(home)
    if not memo.exists():
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, IP_FORWARD.read_text())
    IP_FORWARD.write_text("1\n")


def restore_forwarding(home: Path | None) -> None:
    memo = forwarding_memo(home)
    try:
        before = memo.read_text().strip()
    except FileNotFoundError:
        return
    if before in ("0", "1"):
        IP_FORWARD.write_text(f"{before}\n")
    memo.unlink()


def signal_dns(directory: Path, signum: int) -> None:
    """Signal the network's dnsmasq, if the pid its file names is still that dnsmasq (a
    pid file outlives its process, and the pid may be another program's by now)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((directory / "dnsmasq.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if Path(os.fsdecode(cmdline[0])).name == "dnsmasq" and \
                any(os.fsencode(directory) in part for part in cmdline):
            os.kill(pid, signum)


def read_leases(directory: Path) -> dict[str, str]:
    path = directory / "leases.json"
    if not path.exists():
        return {}
    leases = read_json(path, "the network's address leases",
                       f"stop its VMs, then delete {path} (cove hands out addresses again)")
    if not isinstance(leases, dict):
        die(f"{path} is not a table of leases", f"delete {path}")
    return {str(k): str(v) for k, v in leases.items()}


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[dict[str, str]]:
    """The network's leases, changed under a lock; names and hosts file follow them."""
    with (directory / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        leases = read_leases(directory)
        yield leases
        write_json(directory / "leases.json", leases)
        write_atomic(hosts_file(directory), "".join(f"{ip}\t{vm}\n" for vm, ip in
                                                    sorted(leases.items())), mode=0o644)
        signal_dns(directory, signal.SIGHUP)  # dnsmasq rereads the hosts file


def attach(name: str, vm: str, home: Path | None = None) -> Attachment:
    """An address on the network and a tap on its bridge for one VM."""
    require_root()
    require_tool("ip")
    network = load_network(name, home)
    directory = network_dir(name, home)
    with locked(directory) as leases:
        if vm not in leases:
            taken = {network.gateway, *leases.values()}
            free = (str(h) for h in ipaddress.ip_network(network.subnet).hosts()
                    if str(h) not in taken)
            address = next(free, None)
            if address is None:
                die(f"network {name!r} has no free address left", "use a larger --subnet")
            leases[vm] = address
        address = leases[vm]
    tap = tap_name(vm)
    subprocess.run(["ip", "link", "del", tap], capture_output=True, check=False)
    run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], what="ip tuntap add")
    run(["ip", "link", "set", tap, "master", network.bridge, "up"], what="ip link set master")
    return Attachment(network, address, tap)


def detach(name: str, vm: str, home: Path | None = None) -> None:
    directory = network_dir(name, home)
    if not directory.exists():
        return
    with locked(directory) as leases:
        leases.pop(vm, None)
    subprocess.run(["ip", "link", "del", tap_name(vm)], capture_output=True, check=False)
