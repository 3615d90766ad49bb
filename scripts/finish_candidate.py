"""Finish a version trained by an older build: portable paths and the source-only baseline in its
card, then re-save it in place (the weights and their sha256 are unchanged).

    python scripts/finish_candidate.py REGISTRY VERSION MANIFEST

Used once for the first CPU-trained candidates, whose training run predates the card's
``source_prevalence`` field and the portable paths; kept because a site that trained with an
older release meets the same gap.
"""

from __future__ import annotations

import sys
from pathlib import Path

from models.registry import Registry
from training.baseline import source_prevalence
from training.manifest import read_manifest
from training.portable import Anchors, portable_card


def main(registry: str, version: str, manifest_path: str) -> None:
    versions = Registry(Path(registry))
    card = versions.card(version)
    manifest = read_manifest(manifest_path)
    if manifest.sha256 != card.training_manifest_sha256:
        raise SystemExit("the manifest differs from the one the version was trained on")
    if not card.source_prevalence:
        shares = source_prevalence(r for r in manifest.rows if r.split == "train")
        card = card.replace(source_prevalence=shares)
    anchors = Anchors(registry=Path(registry), manifest_dir=manifest.path.parent)
    card = portable_card(card, anchors, manifest.path)
    versions.replace_card(card)
    print(f"{version}: card finished ({card.training_manifest})")


if __name__ == "__main__":
    main(*sys.argv[1:4])
