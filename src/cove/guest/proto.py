"""Host <-> guest framing: 4-byte big-endian length, then one JSON object.

Shared by the host and the guest agent, so it imports only json. Binary payloads (service
output, exec streams) travel base64-encoded in a "data" field.

Frames (field "t"):
  hello   both ways; the host sends first, with this boot's token; the agent answers with
          its version and caps, or with "refused" and a hang-up when the token is wrong
  req     host -> guest: {"id", "op", ...}; answered by "res" {"id", "ok", ...}
  log     guest -> host: service output {"svc", "fd", "ts", "data"}
  event   guest -> host: {"kind", "svc"?, ...} lifecycle of services
  out     guest -> host: exec output {"ch", "fd", "data"}
  in      host -> guest: exec input {"ch", "data"} or {"ch", "eof": true}
  exit    guest -> host: exec finished {"ch", "code"}
"""

try:
    # The C accelerator directly: `import json` pulls in re, enum and functools, which
    # costs ~0.4 s of every guest boot under TCG. Same encoding, same parsing.
    import _json

    def _unencodable(value: object) -> object:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    _encoder = _json.make_encoder(None, _unencodable, _json.encode_basestring_ascii, None,
                                  ":", ",", False, False, True)

    class _Context:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int

        @staticmethod
        def parse_constant(name: str) -> float:
            return float(name.replace("Infinity", "inf"))

    _scanner = _json.make_scanner(_Context())  # type: ignore[arg-type]

    def dumps(message: object) -> str:
        return "".join(_encoder(message, 0))

    def loads(text: str) -> object:
        value, end = _scanner(text, 0)
        if text[end:].strip():
            raise ValueError(f"extra data at {end}")
        return value

except (ImportError, AttributeError):  # not CPython: the plain module
    import json

    def dumps(message: object) -> str:
        return json.dumps(message, separators=(",", ":"))

    def loads(text: str) -> object:
        return json.loads(text)

VERSION = 1
MAX_FRAME = 16 * 1024 * 1024
PORT_NAME = "cove.agent"


class ProtocolError(Exception):
    pass


def encode(message: dict) -> bytes:  # type: ignore[type-arg]
    body = dumps(message).encode()
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
                message = loads(body.decode())
            except (ValueError, UnicodeDecodeError, StopIteration) as error:
                raise ProtocolError(f"bad frame: {error}") from None
            if not isinstance(message, dict):
                raise ProtocolError("a frame must hold a JSON object")
            frames.append(message)
        return frames
