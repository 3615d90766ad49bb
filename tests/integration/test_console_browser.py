"""The operator console in headless Chromium against a real node, worker and PACS.

``tests/browser/console.mjs`` (playwright-core, Debian's ``chromium``) does what an operator
does; this test starts everything it needs and checks what the clicks left behind: jobs,
deliveries at the PACS, the audit trail. Screenshots are kept in ``test-artifacts/console/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

from pydicom import dcmread

from audit.sinks.json_log import read_events
from tests.harness.cluster import Cluster, make_instances, sop_uid
from tests.harness.net import REPO, free_port
from tests.harness.pacs import SmallPacs
from tests.harness.services import ServiceProcess
from worker.results import ResultObjects

SCRIPT = REPO / "tests" / "browser" / "console.mjs"
ARTIFACTS = Path(os.environ.get("DEEPCOVID_TEST_ARTIFACTS", REPO / "test-artifacts")) / "console"
RESULTS = len(fields(ResultObjects))
"""Result objects per analysed instance (SC, PM, GSPS, SR)."""
USERS = {"ada": ("admin", "a long admin passphrase"), "vic": ("viewer", "a long viewer passphrase")}


def _browser_tools() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (scripts/test-services.sh installs it)"
    assert shutil.which("node"), "node is not installed (scripts/test-services.sh installs it)"
    assert (REPO / "node_modules" / "playwright-core").is_dir(), (
        "playwright-core is not installed: run scripts/install-npm.sh (test-services.sh does)"
    )
    return chromium


def test_console_in_a_browser(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    chromium = _browser_tools()
    pacs = SmallPacs(free_port())
    try:
        cluster = Cluster(settings_env, tmp_path, services)
        cluster.env["DEEPCOVID_DESTINATION"] = pacs.destination
        cluster.env["DEEPCOVID_DELIVERY_MAX_ATTEMPTS"] = "1"  # a refused delivery fails the job
        env = {**os.environ, **cluster.env}
        for name, (role, password) in USERS.items():
            subprocess.run(
                [sys.executable, "-m", "deepcovid.cli", "users", "add", name, "--role", role],
                input=password + "\n",
                text=True,
                env=env,
                cwd=REPO,
                check=True,
                capture_output=True,
            )
        file_a, file_b = make_instances(2, tmp_path / "send")
        pacs.refuse[str(dcmread(file_b, stop_before_pixels=True).StudyInstanceUID)] = RESULTS
        cluster.start_node()
        cluster.start_worker()
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        started = time.monotonic()
        browser = subprocess.run(
            ["node", str(SCRIPT)],
            env={
                **os.environ,
                "BASE_URL": f"http://127.0.0.1:{cluster.env['DEEPCOVID_MONITORING_PORT']}",
                "DICOM_PORT": str(cluster.port),
                "FILE_A": str(file_a),
                "FILE_B": str(file_b),
                "UID_A": sop_uid(file_a),
                "UID_B": sop_uid(file_b),
                "RESULTS": str(RESULTS),
                "ADMIN_USER": "ada",
                "ADMIN_PASSWORD": USERS["ada"][1],
                "VIEWER_USER": "vic",
                "VIEWER_PASSWORD": USERS["vic"][1],
                "SCREENSHOTS": str(ARTIFACTS),
                "CHROMIUM": chromium,
            },
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=540,
        )
        seconds = time.monotonic() - started
        report = browser.stdout + browser.stderr
        assert browser.returncode == 0, (
            report + "\n" + (cluster.node.output()[-4000:] if cluster.node else "")
        )
        print(f"browser run: {seconds:.0f} s\n{report}")

        jobs = cluster.jobs()
        uid_a, uid_b = sop_uid(file_a), sop_uid(file_b)
        assert {jobs[uid_a].state, jobs[uid_b].state} == {"delivered"}
        # B's objects: refused once, then delivered once after the re-analysis.
        b_objects = [r for r in _results(cluster, jobs[uid_b].id)]
        assert len(b_objects) == RESULTS and all(pacs.received[u] == 2 for u in b_objects)
        assert all(pacs.received[u] == 1 for u in _results(cluster, jobs[uid_a].id))
        assert "re-analysis requested by ada (console)" in [
            e.message for e in cluster.store.events(jobs[uid_b].id)
        ]
        events = read_events(Path(cluster.env["DEEPCOVID_DATA_DIR"]) / "logs" / "audit.log")
        people = [
            (e["event"], e["outcome"], e.get("user"), e.get("action"))
            for e in events
            if e["event"] in {"login", "logout", "action", "user"}
        ]
        assert ("action", "accepted", "ada", "reanalyse") in people
        assert ("action", "rejected", "vic", "reanalyse") in people
        assert ("action", "rejected", "ada", "resend") in people  # no CSRF token
        assert people.count(("login", "accepted", "ada", None)) == 2
        assert ("logout", "accepted", "vic", None) in people
        for name in ("login", "job-delivered", "dashboard", "job-failed", "job-reanalysed"):
            assert (ARTIFACTS / f"{name}.png").stat().st_size > 5000
    finally:
        pacs.stop()


def _results(cluster: Cluster, job_id: int) -> list[str]:
    from store.outbox import Outbox

    return [r.sop_instance_uid for r in Outbox(cluster.store).for_job(job_id)]
