"""Host <-> guest framing: 4-byte big-endian length, then one JSON object; or, for the
bytes of exec and tunnel streams, a data frame.

Shared by the host and the guest agent, so it imports only C modules. A data frame's length
word has its top bit set (frames are at most 16 MiB, so a JSON frame never has it); its body
is a kind byte (0 out, 1 in), the fd, the 4-byte channel, then the raw bytes: no base64, no
JSON for the bulk of a stream. Each side sends data frames only once the other's hello said
it reads them (caps "binary"); until then, and for service logs, bytes travel base64-encoded
in a "data" field.

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

import binascii

VERSION = 1
MAX_FRAME = 16 * 1024 * 1024
DATA_FRAME = 0x80000000  # in the length word: a data frame follows, not JSON
DATA_KINDS = ("out", "in")
PORT_NAME = "cove.agent"


class ProtocolError(Exception):
    pass


def encode(message: dict) -> bytes:  # type: ignore[type-arg]
    body = dumps(message).encode()
    return len(body).to_bytes(4, "big") + body


def encode_data(kind: str, channel: int, fd: int, data: bytes) -> bytes:
    """A data frame: `kind` "out" or "in" of `channel`, its raw bytes."""
    head = (len(data) + 6 | DATA_FRAME).to_bytes(4, "big")
    return head + bytes((DATA_KINDS.index(kind), fd)) + channel.to_bytes(4, "big") + data


def payload(frame: dict) -> bytes:  # type: ignore[type-arg]
    """The bytes an out/in frame carries, whichever way it was sent."""
    raw = frame.get("raw")
    if isinstance(raw, bytes):
        return raw
    data = frame.get("data")
    return binascii.a2b_base64(data) if isinstance(data, str) and data else b""


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def data_frame(body: bytes) -> dict:  # type: ignore[type-arg]
    if len(body) < 6 or body[0] >= len(DATA_KINDS):
        raise ProtocolError("bad data frame")
    return {"t": DATA_KINDS[body[0]], "fd": body[1], "ch": int.from_bytes(body[2:6], "big"),
            "raw": body[6:]}


class Decoder:
    """Accumulates bytes and yields complete frames (data frames as dicts with "raw")."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[dict]:  # type: ignore[type-arg]
        self.buffer += data
        frames = []
        while len(self.buffer) >= 4:
            word = int.from_bytes(self.buffer[:4], "big")
            size = word & ~DATA_FRAME
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes exceeds the limit")
            if len(self.buffer) < 4 + size:
                break
            body = bytes(self.buffer[4:4 + size])
            del self.buffer[:4 + size]
            if word & DATA_FRAME:
                frames.append(data_frame(body))
                continue
            try:
                message = loads(body.decode())
            except (ValueError, UnicodeDecodeError, StopIteration) as error:
                raise ProtocolError(f"bad frame: {error}") from None
            if not isinstance(message, dict):
                raise ProtocolError("a frame must hold a JSON object")
            frames.append(message)
        return frames
