"""The host <-> guest framing: JSON frames and raw data frames, in any mix and any split."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cove.guest import proto
from tests.agent_harness import running_agent


@given(st.lists(st.tuples(st.sampled_from(["json", "out", "in"]), st.binary(max_size=3000),
                          st.integers(0, 2**32 - 1)), max_size=8),
       st.integers(1, 97))
def test_frames_survive_any_mix_and_split(items: list[tuple[str, bytes, int]], step: int) -> None:
    stream = b""
    expected: list[dict[str, object]] = []
    for kind, data, channel in items:
        if kind == "json":
            frame: dict[str, object] = {"t": "log", "ch": channel, "data": proto.b64(data)}
            stream += proto.encode(frame)
        else:
            stream += proto.encode_data(kind, channel, 2, data)
            frame = {"t": kind, "fd": 2, "ch": channel, "raw": data}
        expected.append(frame)
    decoder = proto.Decoder()
    frames = []
    for start in range(0, len(stream), step):
        frames += decoder.feed(stream[start:start + step])
    assert frames == expected
    assert [proto.payload(f) for f in frames] == [data for _, data, _ in items]


def test_a_bad_data_frame_is_a_protocol_error() -> None:
    with pytest.raises(proto.ProtocolError):
        proto.Decoder().feed((3 | proto.DATA_FRAME).to_bytes(4, "big") + b"\x00\x01\x02")
    with pytest.raises(proto.ProtocolError):
        proto.Decoder().feed((6 | proto.DATA_FRAME).to_bytes(4, "big") + b"\x07" + b"\0" * 5)
    with pytest.raises(proto.ProtocolError, match="exceeds"):
        proto.Decoder().feed((proto.MAX_FRAME + 1 | proto.DATA_FRAME).to_bytes(4, "big"))


def test_exec_output_and_input_go_raw_once_both_hellos_say_so(tmp_path: Path) -> None:
    """The agent advertises data frames and the host's client uses them: 1 MiB of stdin
    comes back byte-identical through `cat`."""
    blob = bytes(range(256)) * 4096

    async def scenario() -> tuple[bool, int, bytes]:
        async with running_agent(tmp_path, {}, []) as (client, _process):
            output: list[bytes] = []
            code = await client.exec(["cat"], lambda _fd, data: output.append(data),
                                     stdin=blob)
            return client.binary, code, b"".join(output)

    binary, code, echoed = asyncio.run(scenario())
    assert binary and code == 0 and echoed == blob
