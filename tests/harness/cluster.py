"""A whole deployment on loopback for fault, monitoring and load runs.

Our node and Celery worker processes (``deepcovid node`` / ``worker``), optionally a private
``redis-server`` as the broker and a real Orthanc as the results destination; each can be
stopped, killed and started again mid-run. Also: the instances to send, a sender that reports
every instance's C-STORE status, the node's HTTP endpoints, and a count of how many times the
destination received each SOP Instance (an Orthanc Lua filter logs every reception, so a
duplicate delivery shows even though Orthanc keeps only one copy).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from dicom_client.scu import SendResult, send_files
from store import FINAL_STATES, JobStore, JobView
from tests.harness.factories import load_cxr, wrap_pixels
from tests.harness.net import free_port, wait_for
from tests.harness.orthanc import Orthanc
from tests.harness.services import ServiceProcess

IMAGE = "images/covid/figure1__covid__COVID-00001.jpg"
RECEPTION_LUA = """
-- Test only: log every instance Orthanc receives, before it decides whether it is new.
function ReceivedInstanceFilter(dicom, origin, info)
  print('deepcovid-test received ' .. dicom.SOPInstanceUID)
  return true
end
"""
_RECEIVED = re.compile(r"deepcovid-test received ([0-9.]+)")


def make_instances(n: int, out: Path, image: str = IMAGE) -> list[Path]:
    """``n`` chest CR files (one real radiograph, fresh UIDs, a study each) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    pixels = load_cxr(image)
    paths = []
    for i in range(n):
        ds = wrap_pixels(pixels, sop_instance_uid=generate_uid(), study_instance_uid=None)
        path = out / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def sop_uid(path: Path) -> str:
    """The SOP Instance UID of a file we made (from its file meta)."""
    from pydicom.filereader import read_file_meta_info

    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


class Cluster:
    """Node, workers and optional Redis/Orthanc for one test, all stopped by ``services``."""

    def __init__(self, env: dict[str, str], workdir: Path, services: list[ServiceProcess]) -> None:
        self.env = {
            **env,
            "DEEPCOVID_MONITORING_PORT": str(free_port()),
            "DEEPCOVID_NETWORK_TIMEOUT_S": "10",  # a send lost with a dead process is retried
            "DEEPCOVID_DELIVERY_BACKOFF_S": "1",  # after 60 s, not 5 min
            "DEEPCOVID_DELIVERY_MAX_ATTEMPTS": "20",
        }
        self.workdir = workdir
        self.services = services
        self.node: ServiceProcess | None = None
        self.workers: list[ServiceProcess] = []
        self.orthanc: Orthanc | None = None
        self._logs = 0
        self._store: JobStore | None = None

    @property
    def port(self) -> int:
        """The node's DICOM port."""
        return int(self.env["DEEPCOVID_PORT"])

    @property
    def store(self) -> JobStore:
        """The node's job store: ``DEEPCOVID_DATABASE_URL``, else SQLite in the data folder."""
        if self._store is None:
            url = self.env.get("DEEPCOVID_DATABASE_URL") or (
                f"sqlite:///{Path(self.env['DEEPCOVID_DATA_DIR']) / 'jobs.sqlite'}"
            )
            self._store = JobStore(url)
        return self._store

    # --- processes ------------------------------------------------------------------------
    def _start(self, args: list[str], extra: dict[str, str] | None = None) -> ServiceProcess:
        self._logs += 1
        log = self.workdir / f"{self._logs:02d}-{args[0]}.log"
        svc = ServiceProcess(args, {**self.env, **(extra or {})}, log).start()
        self.services.append(svc)
        return svc

    def start_node(self, **extra: str) -> ServiceProcess:
        """Start ``deepcovid node`` (``extra``: more DEEPCOVID_* variables); wait for C-ECHO."""
        node = self._start(["node"], extra)
        self.node = node

        def echo() -> bool:
            assert node.proc is not None and node.proc.poll() is None, node.output()[-3000:]
            cmd = ["echoscu", "-aec", "DEEPCOVID", "127.0.0.1", str(self.port)]
            return subprocess.run(cmd, capture_output=True).returncode == 0

        wait_for(echo, timeout=90, what="the node to answer C-ECHO")
        return node

    def start_worker(self) -> ServiceProcess:
        """Start one ``deepcovid worker`` process (concurrency 1)."""
        worker = self._start(["worker", "--concurrency", "1"])
        self.workers.append(worker)
        return worker

    def with_orthanc(self) -> Orthanc:
        """A real Orthanc as the results destination, logging every instance it receives."""
        orthanc = Orthanc(self.workdir / "orthanc", node_aet="DEEPCOVID", node_port=self.port)
        script = self.workdir / "reception.lua"
        script.write_text(RECEPTION_LUA)
        config = json.loads(orthanc.config.read_text())
        config["LuaScripts"].append(str(script))
        orthanc.config.write_text(json.dumps(config, indent=2))
        self.env["DEEPCOVID_DESTINATION"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
        self.orthanc = orthanc.start()
        return orthanc

    def receptions(self) -> Counter[str]:
        """How many times Orthanc received each SOP Instance UID (all of its runs)."""
        assert self.orthanc is not None
        return Counter(_RECEIVED.findall(self.orthanc.log.read_text(errors="replace")))

    # --- DICOM and HTTP -------------------------------------------------------------------
    def send(
        self, paths: list[Path], on_result: Callable[[SendResult], None] | None = None
    ) -> dict[str, int | None]:
        """C-STORE each file once (no retries); SOP Instance UID -> status (None: no answer)."""
        report = send_files(
            paths,
            "DEEPCOVID",
            "127.0.0.1",
            self.port,
            on_result=on_result,
            calling_ae="MODALITY",
            max_attempts=1,
            timeout_s=30,
        )
        return {sop_uid(Path(r.item)): r.status for r in report.results}

    def http(self, path: str) -> tuple[int, Any]:
        """GET one of the node's operations endpoints: (status, JSON or text body)."""
        url = f"http://127.0.0.1:{self.env['DEEPCOVID_MONITORING_PORT']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                code, body = r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            code, body = err.code, err.read().decode()
        return code, (json.loads(body) if body.startswith("{") else body)

    # --- outcome --------------------------------------------------------------------------
    def jobs(self) -> dict[str, JobView]:
        """Every job by SOP Instance UID."""
        return {j.sop_instance_uid: j for j in self.store.list(limit=100_000)}

    def wait_all_final(self, uids: set[str], timeout: float) -> dict[str, JobView]:
        """Wait until every one of ``uids`` has a job in a final state; return the jobs."""

        def done() -> bool:
            jobs = self.jobs()
            return all(u in jobs and jobs[u].state in FINAL_STATES for u in uids)

        wait_for(done, timeout=timeout, interval=1.0, what=f"{len(uids)} jobs in a final state")
        return self.jobs()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (fails if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, label_text = key.partition("{")
        if sample != name:
            continue
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if got == wanted:
            return float(value)
    raise AssertionError(f"no sample {name}{{{wanted}}} in the metrics")
