"""aiohttp for cove's own processes (the daemon, and the CLI's `run` and `attach`), imported
without reading the system's CA store.

aiohttp builds its default TLS contexts when it is imported, and loading the CA bundle
cost 0.2 s of every daemon start (so of every reattach after a daemon restart) and of
every `cove run`. These processes speak HTTP only over unix sockets (to the daemon, to
Firecracker's and Cloud Hypervisor's APIs), never TLS: the default contexts get no CAs, so
they would refuse any TLS peer, never trust one. The variable is set for the import alone
and restored before anything could inherit it. The Python API (cove.sdk) imports aiohttp
plainly: a program's own aiohttp use must not change.
"""

from __future__ import annotations

import os

_saved = os.environ.get("SSL_CERT_FILE")
os.environ["SSL_CERT_FILE"] = os.devnull
try:
    import aiohttp
    from aiohttp import WSMsgType, web
finally:
    if _saved is None:
        os.environ.pop("SSL_CERT_FILE", None)
    else:
        os.environ["SSL_CERT_FILE"] = _saved

__all__ = ["WSMsgType", "aiohttp", "web"]
