"""Small pure helpers: kernel args, QEMU option escaping, accel verdicts, bzImage header."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cove.image.vmlinux import bzimage_payload, bzimage_version, compression_of
from cove.plan.accel import KvmEvidence, kvm_verdict
from cove.plan.vmplan import kernel_arg, kernel_cmdline
from cove.spec.model import Port, Proto
from cove.vmm.qemu import hostfwd, opt


def test_kernel_arg_quoting() -> None:
    assert kernel_arg("quiet") == "quiet"
    assert kernel_arg("panic", -1) == "panic=-1"
    assert kernel_arg("cove.msg", "a b") == 'cove.msg="a b"'
    with pytest.raises(ValueError):
        kernel_arg("x", 'a "b"')


def test_tsc_only_under_tcg() -> None:
    assert "tsc_early_khz=2600000" in kernel_cmdline("tcg", 2600000, "")
    assert not any(a.startswith("tsc_early_khz") for a in kernel_cmdline("kvm", 2600000, ""))
    assert kernel_cmdline("tcg", None, "foo=1 bar")[-2:] == ("foo=1", "bar")


def test_qemu_option_escaping() -> None:
    assert opt("/tmp/a,b") == "/tmp/a,,b"
    assert hostfwd(Port(8080, 80, Proto.UDP, "0.0.0.0")) == "hostfwd=udp:0.0.0.0:8080-:80"


@pytest.mark.parametrize(("evidence", "accel", "words"), [
    (KvmEvidence(False, False, True), "tcg", "/dev/kvm is missing"),
    (KvmEvidence(False, False, True, dev_kvm_exists=True, dev_kvm_group="kvm", user="ann"),
     "tcg", "join the kvm group (sudo usermod -aG kvm ann"),
    (KvmEvidence(True, True, True, 0.001), "tcg", "kvm_pvm"),
    (KvmEvidence(True, False, False), "tcg", "neither vmx nor svm"),
    (KvmEvidence(True, False, True, None, "no answer within 3 s"), "tcg", "no answer"),
    (KvmEvidence(True, False, True, 1.08), "tcg", "1080 ms"),
    (KvmEvidence(True, False, True, 0.0012), "kvm", "1.2 ms"),
])
def test_kvm_verdicts(evidence: KvmEvidence, accel: str, words: str) -> None:
    decision = kvm_verdict(evidence)
    assert decision.accel == accel
    assert words in decision.reason


def fake_bzimage(payload: bytes, version: str) -> bytes:
    image = bytearray(0x1000)
    image[0x1F1] = 1  # setup_sects: payload region starts at (1 + 1) * 512
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x20E, 0x300 - 0x200)
    image[0x300:0x300 + len(version) + 1] = version.encode() + b"\0"
    struct.pack_into("<II", image, 0x248, 0x100, len(payload))
    image[0x400 + 0x100:0x400 + 0x100 + len(payload)] = payload
    return bytes(image)


def test_bzimage_header() -> None:
    image = fake_bzimage(b"\x02\x21\x4c\x18rest", "6.1.0-test (builder)")
    assert bzimage_payload(image) == b"\x02\x21\x4c\x18rest"
    assert compression_of(bzimage_payload(image)) == "lz4"
    assert bzimage_version(image) == "6.1.0-test"
    with pytest.raises(ValueError):
        bzimage_payload(b"\0" * 0x300)


@pytest.mark.network
def test_real_kernel_header(tmp_path: Path) -> None:
    """A real Debian kernel's bzImage (the one cove boots), fetched as cove fetches it."""
    from cove.host.proc import run
    from cove.image.cache import Cache
    from cove.image.kernel import resolve_package

    name, version = resolve_package("linux-image-cloud-amd64", Cache(tmp_path / "cache"))
    tmp_path.chmod(0o755)  # apt drops to _apt for downloads when it can
    run(["apt-get", "download", f"{name}={version}"], cwd=tmp_path, what="apt-get download")
    run(["dpkg", "-x", str(next(tmp_path.glob("*.deb"))), str(tmp_path / "x")], what="dpkg -x")
    image = next((tmp_path / "x" / "boot").glob("vmlinuz-*")).read_bytes()
    assert compression_of(bzimage_payload(image)) == "lz4"
    assert bzimage_version(image) == next((tmp_path / "x" / "boot").glob("vmlinuz-*")).name \
        .removeprefix("vmlinuz-")


@settings(max_examples=300)
@given(st.lists(st.text(alphabet="ab\n", max_size=40), max_size=20), st.integers(1, 9))
def test_line_splitter_keeps_every_character_in_bounded_lines(chunks: list[str],
                                                              limit: int) -> None:
    from cove.host.lines import LineSplitter

    splitter = LineSplitter(limit)
    lines = [line for chunk in chunks for line in splitter.feed("svc", 1, chunk)]
    pending = "".join(splitter.partial.get(("svc", 1), ([], 0))[0])
    assert all(len(line) <= limit for line in lines)
    assert len(pending) < limit
    text = "".join(chunks)
    assert "".join(lines) + pending == text.replace("\n", "")
    assert len(lines) >= text.count("\n")


def test_a_line_without_end_comes_out_in_pieces() -> None:
    from cove.host.lines import MAX_LINE, LineSplitter

    splitter, chunk = LineSplitter(), "x" * 4096
    lines = [line for _ in range(4096) for line in splitter.feed("svc", 1, chunk)]  # 16 MiB
    assert lines == ["x" * MAX_LINE] * (16 * 2**20 // MAX_LINE)
    assert ("svc", 1) not in splitter.partial


def test_cpu_percent_never_spans_two_hypervisor_processes() -> None:
    from cove.vm.supervisor import cpu_interval

    first = (100, 10.0, 5.0)
    assert cpu_interval(None, first) == (first, None)
    assert cpu_interval(first, (100, 10.2, 5.1)) == (first, None)  # under 0.5 s: keep
    assert cpu_interval(first, (100, 11.0, 5.5)) == ((100, 11.0, 5.5), 50.0)
    restarted = (200, 11.0, 0.3)  # a new QEMU after a restart: less CPU than the old one
    assert cpu_interval(first, restarted) == (restarted, None)
    assert cpu_interval((100, 10.0, 9.0), (100, 11.0, 1.0)) == ((100, 11.0, 1.0), None)


def test_logs_are_read_from_their_end(tmp_path: Path) -> None:
    import json

    from cove.host.journal import last_entries, last_lines

    log, rotated = tmp_path / "services.log", tmp_path / "services.log.1"
    rotated.write_text("".join(json.dumps({"svc": "a", "n": i}) + "\n" for i in range(5000)))
    log.write_text("not json\n" + "".join(json.dumps({"svc": "b" if i % 2 else "a", "n": i})
                                          + "\n" for i in range(5000, 5010)))
    assert [e["n"] for e in last_entries((log, rotated), 3, {})] == [5007, 5008, 5009]
    assert [e["n"] for e in last_entries((log, rotated), 7, {"svc": "a"})] == \
        [4998, 4999, 5000, 5002, 5004, 5006, 5008]
    assert len(last_entries((log, rotated), None, {})) == 5010
    assert last_entries((tmp_path / "none",), 5, {}) == []
    text = tmp_path / "console.log"
    text.write_bytes(b"x" * 200_000 + b"\nlast but one\nlast")
    assert last_lines(text, 2) == ["last but one", "last"]


def test_a_follower_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    import asyncio

    from cove.host.journal import FOLLOW_BACKLOG, LAGGED, Journal

    async def scenario() -> None:
        journal = Journal(tmp_path / "j.jsonl")
        with journal.subscribe() as queue:
            for n in range(FOLLOW_BACKLOG + 10):
                journal.append({"n": n})
            assert queue.qsize() == 1 and queue.get_nowait() is LAGGED
            assert not journal.subscribers
        journal.close()

    asyncio.run(scenario())
