"""The one table of cove.toml settings: it drives parsing, the JSON schema and the docs."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from cove.spec.model import (
    Accel,
    Filesystem,
    Hypervisor,
    Proto,
    Restart,
    ShareProto,
    Source,
    StoreMode,
)

# Patterns are matched whole (re.fullmatch): a trailing newline never slips through `$`.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
GUEST_PATH_PATTERN = r"^/[^\s\0]*$"  # no spaces: /init reads its mount list with `read`
NETWORK_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,10}$"  # becomes part of a bridge name (<= 15)
USER_PATTERN = r"^([a-z_][a-z0-9_-]*|[0-9]+)$"
ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PACKAGE_PATTERN = r"^[a-z0-9][a-z0-9+.-]+$"


class Kind(enum.Enum):
    STR = "string"
    INT = "integer"
    BOOL = "boolean"
    SIZE = "size"  # "256M", "1G", or a number of MiB
    DURATION = "duration"  # "5s", "100ms", "2m", or a number of seconds
    ENUM = "enum"
    PATH = "path"  # relative to the spec file's directory; must exist
    ADDRESS = "IPv4 address"
    STR_LIST = "list of strings"
    ENV = "table of environment variables"
    TABLE = "table"
    TABLE_MAP = "table of tables"
    TABLE_LIST = "array of tables"
    DEPENDS = "table of VM names to a condition (or a list of names)"


@dataclass(frozen=True)
class Setting:
    key: str
    kind: Kind
    help: str
    required: bool = False
    default: object = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    fields: tuple[Setting, ...] = ()
    example: str = ""


def choices(enum_type: type[enum.StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in enum_type)


HEALTH_SETTINGS = (
    Setting("command", Kind.STR, "Check run with /bin/sh -c in the guest; exit 0 means healthy. "
            "A lone curl or wget of a local URL fails without being run while nothing listens "
            "on its port (it could not pass). A plain `curl [-s] [-S] [-f] [-o /dev/null] "
            "http://localhost[:PORT]/PATH` is made by the agent itself, with curl's verdict "
            "and exit codes (no process: under TCG a curl costs 0.35-1.4 s of vCPU).",
            required=True, example="curl -sf http://localhost:8080/"),
    Setting("interval", Kind.DURATION, "Time between checks. Until the first success they "
            "come sooner: 0.5 s after start, then 1, 2, 4 s apart (never more than this), and "
            "at once when a new TCP port starts listening.", default=5.0),
    Setting("timeout", Kind.DURATION, "A check running longer than this fails.", default=2.0),
    Setting("retries", Kind.INT, "Consecutive failures before the service is unhealthy.",
            default=3, minimum=1, maximum=100),
    Setting("start_period", Kind.DURATION,
            "Grace period after start during which failures do not count.", default=0.0),
)

SERVICE_SETTINGS = (
    Setting("command", Kind.STR, "Command line run with /bin/sh -c inside the guest.",
            required=True, example="python3 -m http.server 8080"),
    Setting("pre_start", Kind.STR, "Shell script run before each start; failure stops the start.",
            default=""),
    Setting("env", Kind.ENV, "Environment variables for this service (on top of the VM's env).",
            default={}),
    Setting("restart", Kind.ENUM, "When the agent restarts the service after it exits.",
            default=Restart.ON_FAILURE.value, choices=choices(Restart)),
    Setting("stop_timeout", Kind.DURATION,
            "Grace period between SIGTERM and SIGKILL when stopping.", default=5.0),
    Setting("health", Kind.TABLE, "A health check the agent runs in the guest.", default=None,
            fields=HEALTH_SETTINGS),
    Setting("user", Kind.STR, "User (name or uid) the service runs as.", default="root",
            pattern=USER_PATTERN),
)

SHARE_SETTINGS = (
    Setting("source", Kind.PATH, "Host directory to share.", required=True, example="./src"),
    Setting("target", Kind.STR, "Where it appears in the guest.", required=True,
            pattern=GUEST_PATH_PATTERN, example="/src"),
    Setting("readonly", Kind.BOOL, "Guest cannot write (a host store is always read-only).",
            default=True),
    Setting("proto", Kind.ENUM, "virtiofs, or 9p where the kernel has it.",
            default=ShareProto.VIRTIOFS.value, choices=choices(ShareProto)),
)

VOLUME_SETTINGS = (
    Setting("source", Kind.STR, "A volume name (kept in the cove home) or an image file path.",
            required=True, example="data"),
    Setting("target", Kind.STR, "Where it is mounted in the guest.", required=True,
            pattern=GUEST_PATH_PATTERN, example="/mnt/data"),
    Setting("size", Kind.SIZE, "Size when first created.", default=1024, minimum=16,
            maximum=16 * 1024 * 1024),
    Setting("fs", Kind.ENUM, "Filesystem made on first use.", default=Filesystem.EXT4.value,
            choices=choices(Filesystem)),
    Setting("allow_any_path", Kind.BOOL, "Allow an image path cove refuses by default: a "
            "block or character device, or a file another user owns (the guest writes it).",
            default=False),
)

VM_RESTART_SETTINGS = (
    Setting("policy", Kind.ENUM, "Whether cove boots the VM again when it exits or crashes.",
            default=Restart.ON_FAILURE.value, choices=choices(Restart)),
    Setting("max", Kind.INT, "Restarts allowed before cove gives up.", default=5, minimum=0,
            maximum=1000),
)

PORT_SETTINGS = (
    Setting("host", Kind.INT, "Port on the host.", required=True, minimum=1, maximum=65535),
    Setting("guest", Kind.INT, "Port in the guest.", required=True, minimum=1, maximum=65535),
    Setting("proto", Kind.ENUM, "Transport protocol.", default=Proto.TCP.value,
            choices=choices(Proto)),
    Setting("bind", Kind.ADDRESS, "Host IPv4 address to listen on (loopback unless you choose "
            "otherwise).", default="127.0.0.1"),
)

IDLE_SETTINGS = (
    Setting("suspend_after", Kind.DURATION, "Suspend the VM to disk once its forwarded ports "
            "and exec sessions have been idle this long (0: never); a connection to one of "
            "its ports resumes it. Its ports are then served by the daemon.", default=0.0,
            example="10m"),
)

WARM_SETTINGS = (
    Setting("template", Kind.BOOL, "Save a template of the first healthy boot, so later "
            "starts of the same shape restore it. A template is the guest's RAM: it holds "
            "whatever the guest holds, /run/secrets included (kept 0600 in the cove home, "
            "and never reused once a secret's content changed). false: every start boots "
            "cold and no RAM is saved.", default=True),
)

KERNEL_SETTINGS = (
    Setting("package", Kind.STR, "Debian kernel package fetched with apt-get download.",
            default="linux-image-cloud-amd64", pattern=PACKAGE_PATTERN),
    Setting("path", Kind.PATH, "Your own kernel (vmlinux ELF or bzImage) instead of a package."),
    Setting("modules", Kind.PATH,
            "Directory holding lib/modules/<version> for your own kernel (optional)."),
    Setting("cmdline", Kind.STR, "Extra kernel command line arguments.", default=""),
)

TOP_SETTINGS = (
    Setting("name", Kind.STR, "Name of the VM: lower-case letters, digits, '.', '_', '-'.",
            required=True, pattern=NAME_PATTERN, example="hello"),
    Setting("vcpu", Kind.INT, "Number of virtual CPUs.", default=1, minimum=1, maximum=64),
    Setting("memory", Kind.SIZE, "Guest memory, e.g. \"256M\" or \"1G\".", default=256,
            minimum=64, maximum=1024 * 1024),
    Setting("packages", Kind.STR_LIST, "Debian packages whose files make up the root image.",
            default=[], pattern=PACKAGE_PATTERN),
    Setting("keep", Kind.STR_LIST, "Guest paths (globs) kept in the root image although a trim "
            "rule leaves them out (docs/images.md lists the rules).", default=[],
            pattern=GUEST_PATH_PATTERN, example="/usr/share/doc/*"),
    Setting("env", Kind.ENV, "Environment variables for every service.", default={}),
    Setting("services", Kind.TABLE_MAP, "Services the guest agent supervises, by name.",
            default={}, fields=SERVICE_SETTINGS, pattern=NAME_PATTERN),
    Setting("ports", Kind.TABLE_LIST, "Ports forwarded from the host into the guest.",
            default=[], fields=PORT_SETTINGS),
    Setting("kernel", Kind.TABLE, "Which kernel boots the guest.", default={},
            fields=KERNEL_SETTINGS),
    Setting("restart", Kind.TABLE, "What happens when the whole VM exits or crashes.",
            default={}, fields=VM_RESTART_SETTINGS),
    Setting("idle", Kind.TABLE, "Suspend an idle VM, and resume it on the next connection.",
            default={}, fields=IDLE_SETTINGS),
    Setting("warm", Kind.TABLE, "Warm starts from a saved template (docs/snapshots.md).",
            default={}, fields=WARM_SETTINGS),
    Setting("shares", Kind.TABLE_LIST, "Host directories shared into the guest.", default=[],
            fields=SHARE_SETTINGS),
    Setting("volumes", Kind.TABLE_LIST, "Persistent data disks.", default=[],
            fields=VOLUME_SETTINGS),
    Setting("network", Kind.STR, "\"user\" (NAT, the default), \"none\", or a network made "
            "with `cove network create`.", default="user", pattern=NETWORK_PATTERN),
    Setting("auto_forward", Kind.BOOL, "Forward every TCP port the guest starts listening on.",
            default=False),
    Setting("config", Kind.PATH, "Directory delivered read-only at /config in the guest."),
    Setting("secrets", Kind.PATH, "Directory delivered at /run/secrets (tmpfs, files 0400)."),
    Setting("balloon", Kind.BOOL, "Give memory the guest frees back to the host (virtio-balloon "
            "with free page reporting), where the hypervisor has it wired.", default=True),
    Setting("ephemeral", Kind.BOOL, "Leave no trace: volumes are attached through throw-away "
            "qcow2 overlays (the root's writes are always thrown away).", default=False),
    Setting("source", Kind.ENUM, "Where the root image's files come from.",
            default=Source.HOST.value, choices=choices(Source)),
    Setting("flake", Kind.STR, "Flake output to build and boot, for source = \"nix\".",
            default="", example=".#hello"),
    Setting("store", Kind.ENUM, "How the guest sees the output's Nix closure: an erofs image, "
            "or the host store shared read-only.", default=StoreMode.IMAGE.value,
            choices=choices(StoreMode)),
    Setting("nix_root", Kind.STR, "Root of the Nix store to build in (a chroot store's root, "
            "made on first use); the host's /nix by default.", default="/"),
    Setting("suite", Kind.STR, "Debian suite, for source = \"debian\".", default="bookworm",
            pattern=r"^[a-z][a-z0-9-]*$"),
    Setting("mirror", Kind.STR, "Debian mirror, for source = \"debian\".",
            default="http://deb.debian.org/debian", pattern=r"^https?://\S+$"),
    Setting("hypervisor", Kind.ENUM, "Which hypervisor runs the guest.",
            default=Hypervisor.AUTO.value, choices=choices(Hypervisor)),
    Setting("accel", Kind.ENUM, "CPU acceleration: auto decides by probing KVM.",
            default=Accel.AUTO.value, choices=choices(Accel)),
)


def valid_name(text: str) -> bool:
    """A VM or volume name: also safe as one path component (no '/', not '.' or '..')."""
    return re.fullmatch(NAME_PATTERN, text) is not None
