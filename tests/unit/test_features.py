"""The feature matrix: refusals name the alternative, `auto` picks as documented, and the
docs table is the one the code has."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.plan.choose import choose_hypervisor, explicit_choice
from cove.plan.features import MATRIX, SOFT, Feature, markdown_table, missing_features
from cove.spec.model import Hypervisor

ROOT = Path(__file__).resolve().parents[2]
ALL = frozenset(MATRIX)
Q, FC, CH, CV, KT = (Hypervisor.QEMU, Hypervisor.FIRECRACKER, Hypervisor.CLOUD_HYPERVISOR,
                     Hypervisor.CROSVM, Hypervisor.KVMTOOL)


@pytest.mark.parametrize(("accel", "installed", "wanted", "expected", "words"), [
    ("tcg", ALL, [], Q, "only QEMU runs guests under TCG"),
    ("kvm", ALL, [Feature.TAP], FC, "fastest installed"),
    ("kvm", ALL, [Feature.USER_NET], KT, "firecracker lacks user networking"),
    ("kvm", ALL, [Feature.VIRTIOFS, Feature.TAP], CH, "firecracker lacks virtiofs"),
    ("kvm", ALL, [Feature.P9, Feature.TAP, Feature.VIRTIOFS], CV,
     "cloud-hypervisor lacks 9p shares"),
    ("kvm", ALL, [Feature.USER_NET, Feature.VIRTIOFS], Q, "kvmtool lacks virtiofs"),
    ("kvm", frozenset({Q}), [Feature.TAP], Q, "fastest installed"),
    ("kvm", frozenset({FC, Q}), [Feature.QCOW2], Q, "firecracker lacks qcow2"),
    ("kvm", frozenset({KT}), [Feature.GRACEFUL_SHUTDOWN], KT, "fastest"),  # soft: said, kept
])
def test_auto_decisions(accel: str, installed: frozenset[Hypervisor], wanted: list[Feature],
                        expected: Hypervisor, words: str) -> None:
    choice = choose_hypervisor(Hypervisor.AUTO, accel, installed, wanted)
    assert choice.hypervisor is expected
    assert words in choice.reason


def test_auto_with_nothing_able() -> None:
    with pytest.raises(CoveError, match="firecracker lacks user networking"):
        choose_hypervisor(Hypervisor.AUTO, "kvm", frozenset({FC}), [Feature.USER_NET])


@pytest.mark.parametrize(("hypervisor", "feature"), [
    (h, f) for h, table in MATRIX.items() for f, s in table.items() if not s.ok and f not in SOFT
])
def test_every_unsupported_feature_has_its_message(hypervisor: Hypervisor,
                                                   feature: Feature) -> None:
    note = MATRIX[hypervisor][feature].note
    assert note and ("use" in note or "drop" in note), note  # says what to do instead
    with pytest.raises(CoveError) as caught:
        explicit_choice(hypervisor, [feature])
    assert str(caught.value).startswith(
        f"{feature.value} is not supported by {hypervisor.value}: {note}")


def test_graceful_shutdown_is_reported_not_required() -> None:
    assert missing_features(KT, [Feature.GRACEFUL_SHUTDOWN]) == []
    assert "no graceful stop" in MATRIX[KT][Feature.GRACEFUL_SHUTDOWN].note


def test_docs_table_is_current() -> None:
    doc = (ROOT / "docs" / "hypervisors.md").read_text()
    assert markdown_table() in doc, "run: python -m cove.plan.features, paste into the doc"


def test_cli_check_names_the_missing_feature(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "cove.toml").write_text('name = "x"\nhypervisor = "firecracker"\n')
    result = subprocess.run([sys.executable, "-m", "cove.cli.main", "check", str(tmp_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "user networking is not supported by firecracker" in result.stderr
    # the ports story without user networking: the agent tunnel, with network = "none"
    assert 'use network = "none" and ports still work through the agent tunnel' in result.stderr
    assert "Traceback" not in result.stderr
