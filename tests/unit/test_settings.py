"""Settings: sources, derived paths, validation, and the documentation generated from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from common.settings import Settings
from deepcovid.commands.config import configuration_markdown

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_setup(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.ae_title == "DEEPCOVID" and s.port == 11112
    assert s.db_url == f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    assert s.broker.startswith("sqla+sqlite:///")
    assert s.spool == tmp_path / "spool" and s.results == tmp_path / "results"


def test_environment_beats_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "deepcovid.toml"
    cfg.write_text('port = 4000\nae_title = "FROMFILE"\nallowed_calling_aes = ["A", "B"]\n')
    monkeypatch.setenv("DEEPCOVID_CONFIG", str(cfg))
    monkeypatch.setenv("DEEPCOVID_PORT", "5000")
    s = Settings(data_dir=tmp_path)
    assert s.port == 5000
    assert s.ae_title == "FROMFILE"
    assert s.allowed_calling_aes == ["A", "B"]


def test_comma_separated_allow_list_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPCOVID_ALLOWED_CALLING_AES", "PACS1, PACS2")
    assert Settings().allowed_calling_aes == ["PACS1", "PACS2"]


@pytest.mark.parametrize("bad", ["", "A" * 17])
def test_invalid_ae_title_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="ae_title"):
        Settings(ae_title=bad)


def test_unknown_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("prot = 1\n")
    monkeypatch.setenv("DEEPCOVID_CONFIG", str(cfg))
    with pytest.raises(ValidationError):
        Settings()


def test_configuration_doc_matches_the_code() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == configuration_markdown(), "run: deepcovid config docs > docs/configuration.md"
    for name in Settings.model_fields:
        assert f"`DEEPCOVID_{name.upper()}`" in doc
