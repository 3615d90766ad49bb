"""A real Orthanc (Debian package) on loopback, acting as the PACS in integration tests.

It runs the auto-routing Lua script shipped in ``deploy/orthanc/autorouting.lua`` with the node
declared as modality ``deepcovid``, stores into a temporary folder and is driven over REST. With
``dicomweb=True`` it also loads Debian's DICOMweb plugin (``orthanc-dicomweb``) and serves
DICOMweb at ``/dicom-web/``, as a PACS that a web viewer (OHIF) reads from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness.net import REPO, free_port, wait_for

LUA_SCRIPT = REPO / "deploy" / "orthanc" / "autorouting.lua"
PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
"""Where Debian's Orthanc plugin packages put their shared libraries."""
DICOMWEB_PLUGIN = PLUGIN_DIR / "libOrthancDicomWeb.so"


class Orthanc:
    """One Orthanc process; ``start()``/``stop()`` may be called repeatedly (same storage)."""

    def __init__(
        self,
        workdir: Path,
        *,
        node_aet: str,
        node_port: int,
        routed_modalities: str = "CR,DX",
        aet: str = "ORTHANC",
        dicomweb: bool = False,
    ) -> None:
        self.workdir = workdir
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.node_aet = node_aet
        self.routed_modalities = routed_modalities
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "orthanc.json"
        plugins: list[str] = []
        extra: dict[str, Any] = {}
        if dicomweb:
            # Only this plugin (not the whole folder): the others would want configuration.
            assert DICOMWEB_PLUGIN.exists(), (
                f"{DICOMWEB_PLUGIN} is missing (scripts/test-services.sh installs orthanc-dicomweb)"
            )
            plugins.append(str(DICOMWEB_PLUGIN))
            extra["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}
        self.config.write_text(
            json.dumps(
                {
                    "Name": "deepcovid-test-pacs",
                    "StorageDirectory": str(workdir / "storage"),
                    "IndexDirectory": str(workdir / "storage"),
                    "HttpPort": self.http_port,
                    "DicomPort": self.dicom_port,
                    "DicomAet": aet,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "DicomAlwaysAllowEcho": True,
                    "DicomAlwaysAllowStore": True,
                    "DicomAlwaysAllowFind": True,
                    "DicomCheckCalledAet": False,
                    "LuaScripts": [str(LUA_SCRIPT)],
                    "Plugins": plugins,
                    "DicomModalities": {"deepcovid": [node_aet, "127.0.0.1", node_port]},
                    "StableAge": 2,
                    "DicomScuTimeout": 10,
                    **extra,
                },
                indent=2,
            )
        )
        self.log = workdir / "orthanc.log"

    def start(self) -> Orthanc:
        exe = shutil.which("Orthanc")
        assert exe, "Orthanc is not installed (scripts/test-services.sh installs it)"
        env = {
            **os.environ,
            "DEEPCOVID_AE_TITLE": self.node_aet,
            "DEEPCOVID_ROUTED_MODALITIES": self.routed_modalities,
        }
        self._fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [exe, "--verbose", str(self.config)], stdout=self._fh, stderr=subprocess.STDOUT, env=env
        )
        wait_for(self._alive, timeout=60, what="Orthanc's REST API")
        return self

    def _alive(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if hasattr(self, "_fh"):
            self._fh.close()

    # --- REST ---------------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        return json.loads(self.get_text(path))

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return str(r.read().decode())

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` (JSON-encoded unless it is ``str``, which goes as it is)."""
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def upload(self, path: Path) -> str:
        """Store one DICOM file through the REST API (as a PACS import would); its Orthanc ID."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/instances",
            data=path.read_bytes(),
            headers={"Content-Type": "application/dicom"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return str(json.loads(r.read())["ID"])

    @property
    def url(self) -> str:
        """The REST (and, with ``dicomweb``, DICOMweb) root."""
        return f"http://127.0.0.1:{self.http_port}"

    def study_sop_classes(self, study_instance_uid: str) -> list[str]:
        """SOP Class UIDs of every instance Orthanc holds in the study."""
        return list(self.study_instances(study_instance_uid).values())

    def study_instances(self, study_instance_uid: str) -> dict[str, str]:
        """SOP Instance UID -> SOP Class UID of every instance Orthanc holds in the study."""
        ids = self.post("/tools/lookup", study_instance_uid)
        studies = [i["ID"] for i in ids if i["Type"] == "Study"]
        if not studies:
            return {}
        instances = self.get(f"/studies/{studies[0]}/instances")
        return {
            i["MainDicomTags"]["SOPInstanceUID"]: self.get_text(
                f"/instances/{i['ID']}/metadata/SopClassUid"
            )
            for i in instances
        }

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])
