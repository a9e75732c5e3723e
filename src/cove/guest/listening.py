"""Which TCP ports guest programs listen on, from /proc/net/tcp{,6} (for auto_forward)."""

from __future__ import annotations

LISTEN = "0A"


def listening_ports(text: str) -> set[int]:
    """Ports in LISTEN state on any address or loopback, from a /proc/net/tcp table."""
    ports = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == LISTEN:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def read_listening() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                ports |= listening_ports(handle.read())
        except OSError:
            continue
    return ports


LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
CLIENTS = ("curl", "wget")
SHELL_SYNTAX = set(";|&!<>()`$\n\\{}")


def local_check_port(command: str, env: dict[str, str]) -> int | None:
    """The guest port a health check can only pass through, or None when unsure.

    Only a lone curl or wget of one local http(s) URL qualifies: with nothing listening on
    its port it fails (connection refused) whatever else happens, so the agent can skip
    spawning it (under TCG a curl costs 0.35 s of vCPU, taken from the service starting).
    Shell syntax, retries, proxies or a second URL make it unsure."""
    url = local_url(command, env)
    return None if url is None else url[2]


def local_url(command: str, env: dict[str, str]) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, what follows them) of such a check's one local URL, or None."""
    words = command.split()
    if not words or words[0].rsplit("/", 1)[-1] not in CLIENTS or SHELL_SYNTAX & set(command):
        return None
    if any(w.startswith(("--retry", "-x", "--proxy", "--preproxy", "-e")) for w in words[1:]):
        return None
    if any(key.lower() in ("http_proxy", "https_proxy", "all_proxy") for key in env):
        return None
    urls = [w.strip("'\"") for w in words[1:] if "://" in w]
    if len(urls) != 1:
        return None
    scheme, _, rest = urls[0].partition("://")
    scheme = scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme)
    host = next((h for h in LOCAL_HOSTS if rest.startswith(h)), None)
    if default is None or host is None:
        return None
    rest = rest[len(host):]
    if rest[:1] in ("", "/", "?", "#"):
        return scheme, host, default, rest
    if rest[:1] != ":":
        return None  # localhost.example.com and the like
    digits = rest[1:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not digits.isdigit() or not 0 < int(digits) < 65536:
        return None
    return scheme, host, int(digits), rest[1 + len(digits):]
