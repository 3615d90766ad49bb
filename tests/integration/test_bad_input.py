"""The bad-input corpus (``tests.badinput``) against a real node and a real worker process.

Every case gets its declared answer -- a C-STORE status with its Error Comment, or 0x0000 and
then a final job state with its reason, or a refused association / presentation context --
while the node keeps serving (C-ECHO every few cases, a good instance delivered at the end),
keeps nothing of what it refused (spool and job store), writes nothing outside its spool, logs
no patient identifier, and its memory stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from common.settings import Settings
from tests import badinput as bad
from tests.harness.cluster import Cluster, make_instances
from tests.harness.factories import spool_dataset
from tests.harness.services import ServiceProcess

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ECHO_EVERY = 5
RSS_GROWTH_LIMIT_MB = 300
"""The node's resident memory may grow by at most this much over the whole corpus."""


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def echo_ok(port: int) -> bool:
    """C-ECHO as an allowed AE; whether it succeeded."""
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(bad.VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title=bad.CALLED_AE)
    if not assoc.is_established:
        return False
    try:
        return int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()


def send_case(cluster: Cluster, case: bad.Case, tmp: Path) -> tuple[bad.Answer, str | None]:
    """Send one case; its last answer and the SOP Instance UID a job may exist for."""
    made = case.build(tmp)
    if isinstance(made, bad.Associate):
        return bad.raw_associate(cluster.port, made), None
    answer = bad.Answer("nothing sent")
    for item in made:
        answer = bad.store_file(cluster.port, item)
        if item.wait_final_before_next and answer.status == 0:
            cluster.wait_all_final({item.sop_instance_uid}, timeout=120)
    return answer, made[-1].sop_instance_uid


def test_bad_input_corpus(
    settings_env: dict[str, str], services: list[ServiceProcess], tmp_path: Path
) -> None:
    assert len(bad.CASES) >= 30
    env = {**settings_env, "DEEPCOVID_ALLOWED_CALLING_AES": ",".join(bad.ALLOWED_AES)}
    cluster = Cluster(env, tmp_path / "run", services)
    (tmp_path / "run").mkdir()
    node = cluster.start_node()
    cluster.start_worker()
    assert node.proc is not None
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rss_start = rss_mb(node.proc.pid)

    answers: dict[str, tuple[bad.Answer, str | None]] = {}
    for index, case in enumerate(bad.CASES, start=1):
        answers[case.name] = send_case(cluster, case, corpus)
        if index % ECHO_EVERY == 0:
            assert echo_ok(cluster.port), f"no C-ECHO after case {index} ({case.name})"
    rss_after_corpus = rss_mb(node.proc.pid)

    good = make_instances(1, tmp_path / "good")[0]
    assert cluster.send([good]) == {bad.sop_uid_of(good): 0}
    stored = {uid for answer, uid in answers.values() if answer.status == 0 and uid}
    jobs = cluster.wait_all_final(stored | {bad.sop_uid_of(good)}, timeout=240)

    rows, failures = [], []
    for case in bad.CASES:
        answer, uid = answers[case.name]
        job = jobs.get(uid) if uid else None
        got = answer.kind if answer.status is None else f"0x{answer.status:04X}"
        fate = f"{job.state}: {job.reason or ''}" if job else (answer.comment or "")
        rows.append(f"| {case.name} | {got} | {fate[:90]} |")
        expect = case.expect
        if not bad.outcome_matches(expect, answer):
            failures.append(f"{case.name}: expected {expect}, got {answer}")
        elif expect.status == 0:
            if job is None or job.state != expect.state:
                failures.append(f"{case.name}: job {job and job.state}, expected {expect.state}")
            elif expect.reason and expect.reason not in (job.reason or ""):
                failures.append(f"{case.name}: reason {job.reason!r} lacks {expect.reason!r}")
        elif uid and job is not None:
            failures.append(f"{case.name}: refused with {got} but a job exists")
    print("\n| case | answer | job / Error Comment |\n|---|---|---|\n" + "\n".join(rows))
    assert not failures, "\n".join(failures)

    # the node kept serving: the good instance was analysed and delivered
    assert jobs[bad.sop_uid_of(good)].state == "delivered"
    # nothing refused was kept, and nothing was written outside the spool
    spool = Path(env["DEEPCOVID_DATA_DIR"]) / "spool"
    assert sorted(p.name for p in spool.iterdir()) == sorted(f"{u}.dcm" for u in jobs)
    for name in ("passwd", "x", "1.2.3.dcm"):
        assert not list(Path(env["DEEPCOVID_DATA_DIR"]).rglob(name)), name
    duplicate = jobs[answers["duplicate UID, different content"][1] or ""]
    assert duplicate.times_received == 2
    # no patient identifier in any log line
    for svc in services:
        text = svc.output()
        assert bad.PATIENT_ID not in text and bad.PATIENT_NAME not in text, svc.log
    # memory stayed bounded
    growth = rss_mb(node.proc.pid) - rss_start
    print(
        f"node RSS: {rss_start:.0f} MB at start, {rss_after_corpus:.0f} MB after the corpus, "
        f"growth {growth:.0f} MB"
    )
    assert growth < RSS_GROWTH_LIMIT_MB


def test_content_replaced_mid_analysis_is_analysed_again(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A duplicate UID with new content arriving while the old content is analysed.

    The listener records the new content and queues the job again; the analysis of the old
    content must not then finish the job (it would be ``rejected``/``delivered`` for content
    the node no longer holds, and the new content would never be analysed).
    """
    from store import JobStore
    from store.migrate import upgrade
    from worker import gate
    from worker.pipeline import run_job

    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    store = JobStore(url)
    uid = generate_uid()
    path = tmp_path / f"{uid}.dcm"

    def receive(ds: Dataset, sha256: str) -> int:
        return spool_dataset(store, ds, path, sha256=sha256, calling_ae="TESTSCU")

    job_id = receive(bad.good(view_position="LL", sop_instance_uid=uid), "a" * 64)
    real_check = gate.check

    def check_while_new_content_arrives(ds: Dataset) -> gate.GateResult:
        receive(bad.good(body_part="SKULL", sop_instance_uid=uid), "b" * 64)
        return real_check(ds)

    monkeypatch.setattr(gate, "check", check_while_new_content_arrives)
    first = run_job(job_id, store, settings)
    job = store.get(job_id)
    assert job is not None
    assert first != "rejected" and job.state == "received", (first, job.state, job.reason)
    monkeypatch.setattr(gate, "check", real_check)
    assert run_job(job_id, store, settings) == "rejected"
    job = store.get(job_id)
    assert job is not None and "BodyPartExamined SKULL" in (job.reason or "")
