"""UIDs of the result objects: fresh ones, or derived ones that make re-analysis idempotent.

The caller decides. :meth:`ResultUIDs.generate` gives new random UIDs;
:meth:`ResultUIDs.derive` gives the same UIDs for the same (source instance, model version),
so re-analysing an instance with the same model rebuilds byte-identical identities and a PACS
keeps one copy, while a new model version yields new objects.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pydicom.uid import generate_uid

from common.uids import is_valid_uid


@dataclass(frozen=True)
class ResultUIDs:
    """Series and SOP Instance UIDs of the SR, the SC, the Parametric Map and the GSPS."""

    sr_series: str
    sr_instance: str
    sc_series: str
    sc_instance: str
    pm_series: str
    pm_instance: str
    pr_series: str
    pr_instance: str

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        for f, value in zip(fields(self), values, strict=True):
            if not is_valid_uid(value, strict=True):
                raise ValueError(f"ResultUIDs.{f.name} {value!r} is not a valid UID")
        if len(set(values)) != len(values):
            raise ValueError("ResultUIDs must be distinct UIDs")

    @classmethod
    def generate(cls) -> ResultUIDs:
        """New random UIDs."""
        return cls(**{f.name: generate_uid() for f in fields(cls)})

    @classmethod
    def derive(cls, source_sop_instance_uid: str, model_version: str) -> ResultUIDs:
        """UIDs that depend only on the source instance and the model version."""
        return cls(
            **{
                f.name: generate_uid(
                    entropy_srcs=["deepcovid-node", source_sop_instance_uid, model_version, f.name]
                )
                for f in fields(cls)
            }
        )
