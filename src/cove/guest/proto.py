"""Host <-> guest framing: 4-byte big-endian length, then one JSON object.

Shared by the host and the guest agent, so it imports only json. Binary payloads (service
output, exec streams) travel base64-encoded in a "data" field.

Frames (field "t"):
  hello   both ways; the host sends first, the agent answers with its version and caps
  req     host -> guest: {"id", "op", ...}; answered by "res" {"id", "ok", ...}
  log     guest -> host: service output {"svc", "fd", "ts", "data"}
  event   guest -> host: {"kind", "svc"?, ...} lifecycle of services
  out     guest -> host: exec output {"ch", "fd", "data"}
  in      host -> guest: exec input {"ch", "data"} or {"ch", "eof": true}
  exit    guest -> host: exec finished {"ch", "code"}
"""

import json

VERSION = 1
MAX_FRAME = 16 * 1024 * 1024
PORT_NAME = "cove.agent"


class ProtocolError(Exception):
    pass


def encode(message: dict) -> bytes:  # type: ignore[type-arg]
    body = json.dumps(message, separators=(",", ":")).encode()
    return len(body).to_bytes(4, "big") + body


class Decoder:
    """Accumulates bytes and yields complete frames."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[dict]:  # type: ignore[type-arg]
        self.buffer += data
        frames = []
        while len(self.buffer) >= 4:
            size = int.from_bytes(self.buffer[:4], "big")
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes exceeds the limit")
            if len(self.buffer) < 4 + size:
                break
            body = bytes(self.buffer[4:4 + size])
            del self.buffer[:4 + size]
            try:
                message = json.loads(body)
            except ValueError as error:
                raise ProtocolError(f"bad frame: {error}") from None
            if not isinstance(message, dict):
                raise ProtocolError("a frame must hold a JSON object")
            frames.append(message)
        return frames
