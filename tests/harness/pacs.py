"""A small PACS in the test process: C-STORE and C-FIND (IMAGE level), with planned refusals.

Orthanc is the real PACS of the fault tests; this one exists for what Orthanc cannot be told
to do: refuse the first N objects of a given study with 0xA700 (so a job's delivery fails
once, deterministically) and then accept everything, confirming it by C-FIND.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ParametricMapStorage,
    StudyRootQueryRetrieveInformationModelFind,
)


class SmallPacs:
    """Listens on ``127.0.0.1:port`` as ``PACS`` until :meth:`stop`."""

    def __init__(self, port: int, ae_title: str = "PACS") -> None:
        self.port = port
        self.ae_title = ae_title
        self.stored: dict[str, str] = {}  # SOP Instance UID -> Study Instance UID
        self.received: Counter[str] = Counter()
        self.refuse: dict[str, int] = {}  # Study Instance UID -> refusals left
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = StoragePresentationContexts
        # Not among pynetdicom's default storage contexts; the node sends one per job.
        ae.add_supported_context(ParametricMapStorage)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.server = ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_C_FIND, self._find)],
        )

    @property
    def destination(self) -> str:
        """The node's ``destination`` setting for this PACS."""
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def _store(self, event: Any) -> int:
        ds = event.dataset
        study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
        with self._lock:
            self.received[sop] += 1
            if self.refuse.get(study, 0) > 0:
                self.refuse[study] -= 1
                return 0xA700
            self.stored[sop] = study
        return 0x0000

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        sop = str(query.get("SOPInstanceUID", ""))
        with self._lock:
            study = self.stored.get(sop)
        if study is not None:
            answer = Dataset()
            answer.QueryRetrieveLevel = "IMAGE"
            answer.StudyInstanceUID = study
            answer.SOPInstanceUID = sop
            yield 0xFF00, answer
        yield 0x0000, None

    def stop(self) -> None:
        """Stop listening."""
        self.server.shutdown()
