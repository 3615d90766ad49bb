"""UIDs of a study result, derived so that building the same result again makes the same objects.

The series stay the same across a study's results (a replacement lands in the series of the
result it replaces); the instances depend on the result's number in the study and on the
fingerprint of what it reports (:func:`worker.study.rule.fingerprint`), so a rebuilt result
after a crash has the UIDs the outbox already knows, and a changed study gets new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid


@dataclass(frozen=True)
class StudyResultUIDs:
    """Series and SOP Instance UIDs of the study SR and the KOS."""

    sr_series: str
    sr_instance: str
    kos_series: str
    kos_instance: str

    @classmethod
    def derive(cls, study_instance_uid: str, sequence: int, fingerprint: str) -> StudyResultUIDs:
        """UIDs that depend only on the study, the result's number and its fingerprint."""

        def uid(*parts: str) -> str:
            return generate_uid(
                entropy_srcs=["deepcovid-node", "study", study_instance_uid, *parts]
            )

        instance = (str(sequence), fingerprint)
        return cls(
            sr_series=uid("sr-series"),
            sr_instance=uid("sr", *instance),
            kos_series=uid("kos-series"),
            kos_instance=uid("kos", *instance),
        )
