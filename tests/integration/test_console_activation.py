"""The console activates a model version with the registry's own code in a child process (so a
tampered file never loads into the web server): its refusal comes back as the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dicom_node.console import registry


def test_activation_runs_the_registry_code_in_a_child(model_registry: Path, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    shutil.copytree(model_registry, root)
    version = (root / "ACTIVE").read_text().strip()
    with (root / version / "weights.pt").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ValueError, match="corrupted or does not belong to this card"):
        registry.activate(root, version)
