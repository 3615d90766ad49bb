"""``deepcovid doctor`` says what is wrong before going live, and passes a healthy site.

Each case starts from the test's embedded settings (empty data folder, a random model, free
ports on 127.0.0.1) and breaks one thing: a port taken by another program, a destination that
does not answer or speaks no TLS, a model whose weights were swapped, a disk below the watermark,
an unreachable job store. Our own listener on the port (or as the destination) counts as ours.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from deepcovid.doctor import Finding, check_dcmtk, run_checks
from store.migrate import upgrade
from tests.harness.net import free_port
from tests.unit.dicom_node.conftest import FakeStore


def by_name(findings: list[Finding]) -> dict[str, Finding]:
    return {f.name: f for f in findings}


def changed(settings: Settings, **fields: object) -> Settings:
    """``settings`` with some fields replaced (validated again)."""
    return Settings(**{**settings.values(), **fields})


@pytest.fixture
def listener(settings: Settings) -> Iterator[Settings]:
    """Our DICOM listener on the settings' port (a fake job store behind it)."""
    from dicom_node.scp import start_server

    running = start_server(settings, store=FakeStore(), enqueue=lambda _job: None)
    try:
        yield settings
    finally:
        running.shutdown()


def test_a_fresh_site_is_ready(settings: Settings) -> None:
    found = by_name(run_checks(settings))
    assert [f.name for f in found.values() if f.failed] == []
    assert found["job store"].level == "warn" and "db upgrade" in found["job store"].fix
    assert found["dicom port"].detail.endswith("is free")
    assert "loads; weights match sha256" in found["model"].detail
    assert "none configured" in found["destination"].detail
    upgrade(settings.storage.db_url)
    assert by_name(run_checks(settings))["job store"].level == "ok"


def test_a_port_taken_by_another_program_fails(settings: Settings) -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind((settings.listener.bind_address, settings.listener.port))
        other.listen()
        found = by_name(run_checks(settings))["dicom port"]
    assert found.failed and "another program" in found.detail and "DEEPCOVID_PORT" in found.fix


def test_a_port_used_by_this_node_is_fine(listener: Settings) -> None:
    found = by_name(run_checks(listener))["dicom port"]
    assert found.level == "ok" and "this node" in found.detail


def test_the_destination_must_answer(settings: Settings, listener: Settings) -> None:
    silent = changed(settings, destination=f"PACS@127.0.0.1:{free_port()}")
    found = by_name(run_checks(silent))["destination"]
    assert found.failed and "DEEPCOVID_DESTINATION" in found.fix
    ours = changed(
        settings, destination=f"{settings.listener.ae_title}@127.0.0.1:{settings.listener.port}"
    )
    found = by_name(run_checks(ours))["destination"]
    assert found.level == "ok" and "answers C-ECHO" in found.detail


def test_a_destination_without_tls_fails_the_handshake(listener: Settings) -> None:
    tls = changed(
        listener,
        destination=f"{listener.listener.ae_title}@127.0.0.1:{listener.listener.port}",
        destination_tls=True,
    )
    found = by_name(run_checks(tls))["destination"]
    assert found.failed and "TLS handshake failed" in found.detail


def test_a_model_whose_weights_changed_fails(settings: Settings, tmp_path: Path) -> None:
    copy = tmp_path / "registry"
    shutil.copytree(settings.model.registry_dir, copy)
    version = (copy / "ACTIVE").read_text().strip()
    with (copy / version / "weights.pt").open("ab") as fh:
        fh.write(b"tampered")
    found = by_name(run_checks(changed(settings, model_registry_dir=copy)))["model"]
    assert found.failed and "cannot be used" in found.detail
    (copy / "ACTIVE").unlink()
    found = by_name(run_checks(changed(settings, model_registry_dir=copy)))["model"]
    assert found.failed and "models activate" in found.fix


def test_a_policy_the_card_cannot_serve_warns(settings: Settings, tmp_path: Path) -> None:
    """threshold_policy clinical on a card with one threshold: a warning naming the fix; with
    both points stored, the check names the clinical point and its threshold."""
    from models.card import ModelCard
    from models.operating_point import CLINICAL, PAPER, OperatingPoint
    from models.registry import Registry

    copy = tmp_path / "registry"
    shutil.copytree(settings.model.registry_dir, copy)
    registry = Registry(copy)
    card: ModelCard = registry.card(registry.active_version() or "")
    registry.replace_card(card.replace(operating_points={}))  # a card from before the points
    clinical = changed(settings, model_registry_dir=copy, threshold_policy=CLINICAL)
    found = by_name(run_checks(clinical))["model"]
    assert found.level == "warn" and "holds no clinical point" in found.detail
    assert "deepcovid threshold --model" in found.fix
    paper = changed(settings, model_registry_dir=copy, threshold_policy=PAPER)
    assert by_name(run_checks(paper))["model"].level == "ok"

    registry.replace_card(
        card.replace(
            operating_points={
                PAPER: OperatingPoint(card.threshold, "paper rule").to_dict(),
                CLINICAL: OperatingPoint(0.61, "clinical rule").to_dict(),
            }
        )
    )
    found = by_name(run_checks(clinical))["model"]
    assert found.level == "ok"
    assert "threshold 0.6100: clinical (sensitivity >= 90 %)" in found.detail


def test_a_spool_below_the_watermark_fails(settings: Settings) -> None:
    found = by_name(run_checks(changed(settings, min_free_space_mb=10**9)))["spool"]
    assert found.failed and "free disk space" in found.fix


def test_an_unreachable_job_store_fails(settings: Settings) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    found = by_name(run_checks(changed(settings, database_url=url)))["job store"]
    assert found.failed and "unreachable" in found.detail


def test_missing_dcmtk_only_warns() -> None:
    found = check_dcmtk(which=lambda _tool: None)
    assert found.level == "warn" and found.fix == "apt install dcmtk"


def test_the_command_exits_1_when_a_check_fails(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.settings import get_settings
    from deepcovid.cli import main

    assert main(["doctor"]) == 0
    assert "ready to go live" in capsys.readouterr().out
    monkeypatch.setenv("DEEPCOVID_DESTINATION", f"PACS@127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  destination" in out and "1 check(s) failed: destination" in out


def test_view_check_loads_when_on_and_warns_when_off(settings: Settings) -> None:
    from deepcovid.doctor import check_view_check

    assert check_view_check(changed(settings, view_check=False)).level == "warn"
    found = check_view_check(changed(settings, view_check=True))
    assert found.level == "ok" and "loads; weights match sha256" in found.detail, found
