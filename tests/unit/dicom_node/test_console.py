"""The operator console through Starlette's TestClient: logins, roles, CSRF, the rate limit,
redaction, no patient data on any page, the pages and the actions.

The browser layer (``tests/integration/test_console_browser.py``) drives a real node in
headless Chromium.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from starlette.testclient import TestClient

import audit
from audit.recorder import Recorder
from audit.sinks.json_log import JsonLogSink, read_events
from common.settings import Settings
from common.states import JobState
from dicom_node.console import render
from dicom_node.console.app import console_routes
from dicom_node.console.auth import SESSION_COOKIE, LoginLimiter
from dicom_node.console.context import ConsoleContext
from dicom_node.ops.health import CheckResult, Readiness
from dicom_node.ops.server import make_app
from store import JobStore
from store.migrate import upgrade
from store.outbox import NewResult, Outbox
from store.schema import DeliveryState
from store.users import Users
from tests.harness.factories import record_job, wrap_pixels

PASSWORD = "correct horse battery"
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-SECRET-77"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Env:
    """A console on a fresh job store, with an admin and a viewer."""

    def __init__(self, tmp: Path, registry: Path, **overrides: Any) -> None:
        self.settings = Settings(
            data_dir=tmp / "data",
            model_registry_dir=registry,
            destination="PACS@127.0.0.1:4242",
            **overrides,
        )
        self.settings.storage.ensure_dirs()
        upgrade(self.settings.storage.db_url)
        self.store = JobStore(self.settings.storage.db_url)
        users = Users(self.store)
        users.add("alice", PASSWORD, "admin")
        users.add("victor", PASSWORD, "viewer")
        self.enqueued: list[int] = []
        self.audit_path = tmp / "audit.log"
        self.audit = Recorder([JsonLogSink(self.audit_path)])
        readiness = Readiness({"database": lambda: CheckResult("database", True, "job store ok")})
        self.console = ConsoleContext.create(
            self.settings,
            store=self.store,
            readiness=readiness,
            recorder=self.audit,
            enqueue=self.enqueued.append,
        )
        self.app = make_app(console_routes(self.console))

    def client(self) -> TestClient:
        scheme = "https" if self.settings.console.tls else "http"
        return TestClient(self.app, base_url=f"{scheme}://testserver", follow_redirects=False)

    def login(self, name: str = "alice", password: str = PASSWORD) -> TestClient:
        client = self.client()
        response = login(client, name, password)
        assert response.status_code == 303, response.text
        return client

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.audit_path)  # type: ignore[return-value]


def login(client: TestClient, name: str, password: str, target: str = "/") -> Any:
    page = client.get("/login")
    token = CSRF.search(page.text)
    assert token, page.text
    form = {"username": name, "password": password, "csrf_token": token.group(1), "next": target}
    return client.post("/login", data=form)


def csrf_of(client: TestClient, path: str = "/") -> str:
    match = CSRF.search(client.get(path).text)
    assert match
    return match.group(1)


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 with its smallest cost: the same code, without a second per hash."""
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        "store.users._hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def env(tmp_path: Path, model_registry: Path) -> Iterator[Env]:
    made = Env(tmp_path, model_registry)
    yield made
    made.audit.close()
    audit.close()  # what a command configured for this process


def analysed_job(env: Env, *, state: JobState = JobState.DELIVERED) -> int:
    """A job with real SR, SC and PM files from a source carrying a patient name and ID."""
    from worker.resultfiles import write_result
    from worker.results import AlgorithmInfo, build_results

    pixels = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 7) % 4096
    source = wrap_pixels(pixels, patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    job_id = record_job(env.store, str(source.SOPInstanceUID))
    objects = build_results(
        source,
        probability=0.8,
        threshold=0.5,
        heatmap=np.outer(np.hanning(64), np.hanning(48)).astype(np.float32),
        display_image=pixels.astype(np.float32) / 4095,
        algorithm=AlgorithmInfo(
            name="Deep-COVID", version="v0001", device_uid="1.2.3.4.5", model_name="squeezenet1_1"
        ),
    )
    new = []
    for kind, ds in (("sr", objects.sr), ("sc", objects.sc), ("pm", objects.pmap)):
        path = write_result(env.settings.storage.results, ds)
        new.append(
            NewResult(
                kind,
                str(ds.SOPInstanceUID),
                str(ds.SOPClassUID),
                str(ds.SeriesInstanceUID),
                str(ds.StudyInstanceUID),
                str(path),
            )
        )
    env.store.set_state(
        job_id,
        JobState.ANALYSED,
        modality="CR",
        model_version="v0001",
        probability=0.8,
        threshold=0.5,
        finding="present",
    )
    env.store.set_state(job_id, JobState.RESULTS_BUILT, "built")
    outbox = Outbox(env.store)
    outbox.add(job_id, new, model_version="v0001", destination=env.settings.delivery.destination)
    final = DeliveryState.FAILED if state == JobState.FAILED else DeliveryState.CONFIRMED
    for row in outbox.for_job(job_id):
        outbox.mark(row.id, final, error="refused" if final == DeliveryState.FAILED else None)
    job = env.store.get(job_id)
    assert job is not None and job.state == state, job
    return job_id


# --- logins -------------------------------------------------------------------------------------
def test_every_page_needs_a_login_but_health_and_metrics_do_not(env: Env) -> None:
    client = env.client()
    for path in ("/", "/jobs", "/jobs/1", "/models", "/settings", "/live/dashboard"):
        response = client.get(path)
        assert response.status_code in {303, 401}, path
        if response.status_code == 303:
            assert response.headers["location"].startswith("/login?next="), path
    assert client.get("/jobs/1/overlay.png").status_code == 401
    assert client.post("/jobs/1/reanalyse", data={}).status_code == 303  # to the login
    assert client.get("/nope").status_code == 404


def protected_routes(env: Env) -> list[tuple[str, str]]:
    """(method, path) of every console route but the login form and logout, path parameters
    filled in: read from the assembled app, so a new route is covered without being listed."""
    from starlette.routing import Mount, Route

    found = []
    for mount in console_routes(env.console):
        if not isinstance(mount, Mount) or mount.path == "/static":
            continue
        for route in mount.routes:
            assert isinstance(route, Route)
            if route.path in {"/login", "/logout"}:
                continue
            path = route.path.replace("{job_id:int}", "1").replace("{version}", "v0001")
            found += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def test_an_anonymous_request_to_any_protected_route_is_sent_to_the_login(env: Env) -> None:
    client = env.client()
    routes = protected_routes(env)
    assert ("POST", "/deliveries/retry-failed") in routes and ("GET", "/settings") in routes
    for method, path in routes:
        response = client.request(method, path + "?page=2", data={})
        if path.startswith("/live/") or path.endswith(".png"):  # fetched by script or <img>
            assert response.status_code == 401, (method, path)
            assert response.json() == {"error": "login required"}
        else:
            assert response.status_code == 303, (method, path)
            assert response.headers["location"] == "/login?next=" + quote(path + "?page=2", "")
    # An expired or unknown session cookie is no session.
    client.cookies.set(SESSION_COOKIE, "not-a-session")
    assert client.get("/").headers["location"] == "/login?next=%2F"
    assert [e for e in env.events() if e["event"] == "action"] == []


def test_after_the_login_the_page_asked_for_is_shown(env: Env) -> None:
    client = env.client()
    asked = client.get("/jobs?state=failed").headers["location"]
    assert 'name="next" value="/jobs?state=failed"' in client.get(asked).text
    response = login(client, "alice", PASSWORD, target="/jobs?state=failed")
    assert response.headers["location"] == "/jobs?state=failed"
    assert client.get("/login?next=/models").headers["location"] == "/models"


def test_a_viewer_is_refused_every_admin_action(env: Env) -> None:
    job_id = analysed_job(env, state=JobState.FAILED)
    version = (env.settings.model.registry_dir / "ACTIVE").read_text().strip()
    viewer = env.login("victor")
    token = csrf_of(viewer)
    posts = {
        f"/jobs/{job_id}/reanalyse": {},
        f"/jobs/{job_id}/resend": {},
        "/deliveries/retry-failed": {},
        f"/models/{version}/activate": {"confirm": version},
    }
    for path, extra in posts.items():
        response = viewer.post(path, data={"csrf_token": token, **extra})
        assert response.status_code == 403, path
        assert "Only an admin may do this" in response.text
    refused = [(e["action"], e["outcome"]) for e in env.events() if e["event"] == "action"]
    assert refused == [
        ("reanalyse", "rejected"),
        ("resend", "rejected"),
        ("retry-failed", "rejected"),
        ("activate-model", "rejected"),
    ]
    job = env.store.get(job_id)
    assert job is not None and job.state == JobState.FAILED and env.enqueued == []


def test_login_sets_a_strict_httponly_cookie_and_is_audited(env: Env) -> None:
    client = env.client()
    response = login(client, "alice", PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = next(c for c in response.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "Dashboard" in page.text and "alice" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert login(env.client(), "alice", "wrong password!").status_code == 401
    assert login(env.client(), "nobody", PASSWORD).status_code == 401
    logins = [(e["outcome"], e["user"]) for e in env.events() if e["event"] == "login"]
    assert logins == [("accepted", "alice"), ("rejected", "alice"), ("rejected", "nobody")]


def test_cookies_are_secure_over_tls(tmp_path: Path, model_registry: Path) -> None:
    cert = tmp_path / "node.crt"
    cert.write_text("not read by this test")
    env = Env(tmp_path, model_registry, console_tls=True, tls_cert=cert)
    client = env.client()
    response = login(client, "alice", PASSWORD)
    cookie = next(c for c in response.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "Secure" in cookie


def test_logout_ends_the_session(env: Env) -> None:
    client = env.login()
    token = csrf_of(client)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").status_code == 303
    assert [e["event"] for e in env.events()][-1] == "logout"


def test_the_login_form_needs_its_csrf_cookie(env: Env) -> None:
    client = env.client()
    response = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_failed_logins_are_rate_limited_per_address_and_name(env: Env) -> None:
    client = env.client()
    for _ in range(env.settings.console.login_max_failures):
        assert login(client, "alice", "not the password").status_code == 401
    blocked = login(client, "alice", PASSWORD)  # even the right password now
    assert blocked.status_code == 429 and "retry-after" in blocked.headers
    assert "Too many failed attempts" in blocked.text
    reasons = [e["reason"] for e in env.events() if e["event"] == "login"]
    assert reasons[-1] == "too many failed attempts"


def test_the_limiter_forgets_after_its_window() -> None:
    now = [0.0]
    limiter = LoginLimiter(3, 60, clock=lambda: now[0])
    keys = ("ip:1.2.3.4", "user:alice")
    for _ in range(3):
        limiter.failed(keys)
    assert limiter.blocked(keys) == 60
    assert limiter.blocked(("ip:5.6.7.8", "user:bob")) == 0
    now[0] = 61
    assert limiter.blocked(keys) == 0


def test_a_next_parameter_cannot_leave_the_site(env: Env) -> None:
    client = env.client()
    page = client.get("/login?next=//evil.example/x")
    token = CSRF.search(page.text)
    assert token
    response = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf_token": token.group(1),
            "next": "https://evil.example/",
        },
    )
    assert response.headers["location"] == "/"


# --- roles and CSRF ------------------------------------------------------------------------------
def test_a_viewer_sees_but_cannot_act(env: Env) -> None:
    job_id = analysed_job(env, state=JobState.FAILED)
    viewer = env.login("victor")
    page = viewer.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert 'id="reanalyse"' not in page.text and "An admin can" in page.text
    token = csrf_of(viewer, f"/jobs/{job_id}")
    response = viewer.post(f"/jobs/{job_id}/reanalyse", data={"csrf_token": token})
    assert response.status_code == 403
    assert viewer.post("/deliveries/retry-failed", data={"csrf_token": token}).status_code == 403
    assert env.enqueued == []
    job = env.store.get(job_id)
    assert job is not None and job.state == JobState.FAILED
    refused = [e for e in env.events() if e["event"] == "action"]
    assert {(e["outcome"], e["user"], e["reason"]) for e in refused} == {
        ("rejected", "victor", "the viewer role may not run actions")
    }


def test_a_post_without_its_csrf_token_is_refused(env: Env) -> None:
    job_id = analysed_job(env, state=JobState.FAILED)
    admin = env.login()
    for data in ({}, {"csrf_token": "forged"}):
        response = admin.post(f"/jobs/{job_id}/reanalyse", data=data)
        assert response.status_code == 403
    token = csrf_of(admin)
    cross = admin.post(
        f"/jobs/{job_id}/reanalyse",
        data={"csrf_token": token},
        headers={"origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert env.enqueued == []
    assert [e["reason"] for e in env.events() if e["event"] == "action"] == [
        "missing or wrong CSRF token"
    ] * 3


# --- actions ---------------------------------------------------------------------------------
def test_reanalyse_is_idempotent_audited_and_restarts_failed_deliveries(env: Env) -> None:
    job_id = analysed_job(env, state=JobState.FAILED)
    admin = env.login()
    token = csrf_of(admin, f"/jobs/{job_id}")
    first = admin.post(f"/jobs/{job_id}/reanalyse", data={"csrf_token": token})
    assert first.status_code == 303 and first.headers["location"] == f"/jobs/{job_id}"
    page = admin.get(f"/jobs/{job_id}")
    assert "queued for analysis again; 3 failed delivery(ies) start over" in page.text
    assert "re-analysis requested by alice (console)" in page.text
    assert env.enqueued == [job_id]
    job = env.store.get(job_id)
    assert job is not None and job.state == JobState.RECEIVED and job.reason is None
    assert {r.delivery_state for r in Outbox(env.store).for_job(job_id)} == {"pending"}
    admin.post(f"/jobs/{job_id}/reanalyse", data={"csrf_token": token})  # a second click
    assert env.enqueued == [job_id]
    assert "only failed or rejected jobs are analysed again" in admin.get(f"/jobs/{job_id}").text
    [accepted, again] = [e for e in env.events() if e["event"] == "action"]
    assert accepted["outcome"] == "accepted" and accepted["action"] == "reanalyse"
    assert accepted["target"] == job.sop_instance_uid and accepted["role"] == "admin"
    assert "only failed or rejected" in again["reason"]


def test_resend_and_retry_failed(env: Env) -> None:
    delivered = analysed_job(env)
    failed = analysed_job(env, state=JobState.FAILED)
    admin = env.login()
    token = csrf_of(admin)
    admin.post(f"/jobs/{delivered}/resend", data={"csrf_token": token})
    job = env.store.get(delivered)
    assert job is not None and job.state == JobState.RESULTS_BUILT
    rows = Outbox(env.store).for_job(delivered)
    assert {(r.delivery_state, r.attempts) for r in rows} == {("pending", 0)}
    admin.post(f"/jobs/{delivered}/resend", data={"csrf_token": token})  # a second click
    assert "being sent already" in admin.get(f"/jobs/{delivered}").text
    dashboard = admin.get("/").text
    assert 'id="retry-failed"' in dashboard
    admin.post("/deliveries/retry-failed", data={"csrf_token": token})
    job = env.store.get(failed)
    assert job is not None and job.state == JobState.RESULTS_BUILT
    assert "3 failed result object(s) of 1 job(s) queued for sending" in admin.get("/").text
    admin.post("/deliveries/retry-failed", data={"csrf_token": token})
    assert "no failed deliveries" in admin.get("/").text


def test_cli_and_console_share_the_actions(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepcovid.cli import main
    from store.actions import reanalyse

    job_id = analysed_job(env, state=JobState.FAILED)
    monkeypatch.setattr("deepcovid.commands.jobs._store", lambda: env.store)
    monkeypatch.setattr("deepcovid.commands.jobs.get_settings", lambda: env.settings)
    calls: list[Any] = []
    monkeypatch.setattr(
        "store.actions.reanalyse",
        lambda *a, **k: calls.append((a, k)) or reanalyse(*a, **k, enqueue=env.enqueued.append),
    )
    job = env.store.get(job_id)
    assert job is not None
    assert main(["jobs", "reanalyse", job.sop_instance_uid]) == 0
    assert calls and env.enqueued == [job_id]
    assert main(["jobs", "reanalyse", job.sop_instance_uid]) == 1  # nothing left to do
    events = read_events(env.settings.storage.logs / "audit.log")
    assert [(e["via"], e["action"]) for e in events] == [("cli", "reanalyse")] * 2


# --- pages -----------------------------------------------------------------------------------
def test_no_patient_data_on_any_page(env: Env) -> None:
    job_id = analysed_job(env)
    admin = env.login()
    pages = ["/", "/live/dashboard", "/jobs", f"/jobs/{job_id}", f"/live/jobs/{job_id}"]
    pages += ["/models", "/settings", "/jobs?q=1.2"]
    for path in pages:
        text = admin.get(path).text
        for secret in ("Doe", "Jane", PATIENT_ID, "19700101"):
            assert secret not in text, (path, secret)
    # ... although the result objects carry them (the SR holds the patient module).
    sr = next(r for r in Outbox(env.store).for_job(job_id) if r.kind == "sr")
    assert PATIENT_ID.encode() in Path(sr.path).read_bytes()


def test_the_job_page_shows_overlay_sr_deliveries_and_timeline(env: Env) -> None:
    job_id = analysed_job(env)
    admin = env.login()
    page = admin.get(f"/jobs/{job_id}").text
    assert f'src="/jobs/{job_id}/overlay.png?v=' in page
    assert "COVID-19" in page and "Probability" in page and "0.8" in page
    assert page.count('class="delivery confirmed"') == 3 and "C-FIND found it" in page
    assert "received from TEST" in page
    png = admin.get(f"/jobs/{job_id}/overlay.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    assert "private" in png.headers["cache-control"]


def test_sr_table_hides_person_names_and_patient_values() -> None:
    from pydicom.dataset import Dataset

    ds = Dataset()
    name = Dataset()
    name.ValueType, name.RelationshipType = "PNAME", "HAS OBS CONTEXT"
    name.PersonName = "Someone^Else"
    text = Dataset()
    text.ValueType, text.TextValue = "TEXT", "seen for PID-SECRET-77"
    orientation = Dataset()
    orientation.ValueType, orientation.TextValue = "TEXT", "P"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "111044", "DCM"
    code.CodeMeaning = "Patient Orientation Row"
    orientation.ConceptNameCodeSequence = [code]
    ds.ContentSequence = [name, text, orientation]
    ds.PatientName = "Test^Patient"  # a name part that is also a word of a code meaning
    ds.PatientID = "PID-SECRET-77"
    table = render.sr_table_of(ds)
    assert [r.value for r in table.rows] == [render.HIDDEN, render.HIDDEN, "P"]
    assert table.rows[2].concept == "Patient Orientation Row"


def test_the_overlay_must_be_in_the_results_folder(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes(b"x")
    (tmp_path / "results").mkdir()
    with pytest.raises(render.NotAResult):
        render.overlay_png(tmp_path / "results", outside)


def test_jobs_filter_search_and_paginate(env: Env) -> None:
    uids = [f"1.2.826.0.1.{i}" for i in range(30)]
    ids = [record_job(env.store, uid) for uid in uids]
    env.store.set_state(ids[3], JobState.REJECTED, "lateral", reason="ViewPosition LL")
    env.store.record_received(
        sop_instance_uid="1.2.826.0.1.99",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="TEST",
        spool_path="/spool/x.dcm",
        sha256="0" * 64,
        size_bytes=1,
        accession_number="ACC-4711",
    )
    admin = env.login()
    first = admin.get("/jobs").text
    assert "31 job(s)" in first and "page 1 of 2" in first and 'id="older"' in first
    assert first.index("1.2.826.0.1.99") < first.index("1.2.826.0.1.29")  # newest first
    second = admin.get("/jobs?page=2").text
    assert "1.2.826.0.1.0<" in second and 'id="newer"' in second
    rejected = admin.get("/jobs?state=rejected").text
    assert "1 job(s)" in rejected and "1.2.826.0.1.3<" in rejected
    assert "1 job(s)" in admin.get("/jobs?q=ACC-4711").text
    assert "1 job(s)" in admin.get("/jobs?q=1.2.826.0.1.17").text
    assert "0 job(s)" in admin.get("/jobs?modality=DX").text
    assert "0 job(s)" in admin.get("/jobs?from=2001-01-01&to=2001-01-31").text
    assert "31 job(s)" in admin.get("/jobs?state=bogus&page=x").text
    dashboard = admin.get("/").text
    assert "ViewPosition LL" in dashboard  # the top rejection reason


def test_settings_are_shown_with_secrets_redacted(tmp_path: Path, model_registry: Path) -> None:
    env = Env(tmp_path, model_registry)
    env.console.settings = Settings(
        data_dir=tmp_path / "data",
        broker_url="redis://:hunter2secret@redis:6379/0",
        database_url=env.settings.storage.db_url,
    )
    page = env.login().get("/settings").text
    assert "hunter2secret" not in page and "redis://:***@redis:6379/0" in page
    assert "console_login_max_failures" in page


def test_models_page_and_confirmed_activation(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from models.registry import Registry

    # The registry's own activation, in this process (the node runs it in a child process,
    # which costs a PyTorch import: test_activation_runs_the_registry_code_in_a_child).
    monkeypatch.setattr(
        "dicom_node.console.registry.activate", lambda root, v: Registry(root).activate(v)
    )

    root = tmp_path / "registry"
    shutil.copytree(env.settings.model.registry_dir, root)
    active = (root / "ACTIVE").read_text().strip()
    second = "v9999"
    shutil.copytree(root / active, root / second)
    card = json.loads((root / second / "model_card.json").read_text())
    card["version"] = second
    card["metrics"] = {
        "test/auc": {"value": 0.91, "ci_low": 0.88, "ci_high": 0.94, "ci_level": 0.95}
    }
    (root / second / "model_card.json").write_text(json.dumps(card))
    model = env.settings.model.model_copy(update={"registry_dir": root})
    env.console.settings = env.settings.model_copy(update={"model": model})
    admin = env.login()
    page = admin.get("/models").text
    assert second in page and "0.910" in page and "0.880–0.940 (95 %)" in page
    assert f'href="/models/{second}/activate"' in page
    confirm = admin.get(f"/models/{second}/activate").text
    token = CSRF.search(confirm)
    assert token
    not_confirmed = admin.post(
        f"/models/{second}/activate", data={"csrf_token": token.group(1), "confirm": "no"}
    )
    assert not_confirmed.status_code == 303
    assert (root / "ACTIVE").read_text().strip() == active
    admin.post(f"/models/{second}/activate", data={"csrf_token": token.group(1), "confirm": second})
    assert (root / "ACTIVE").read_text().strip() == second
    assert f"version {second} is now the active model" in admin.get("/models").text
    viewer = env.login("victor")
    response = viewer.post(
        f"/models/{active}/activate", data={"csrf_token": csrf_of(viewer), "confirm": active}
    )
    assert response.status_code == 403
    assert (root / "ACTIVE").read_text().strip() == second


def test_the_console_shares_the_monitoring_port_or_has_its_own(
    tmp_path: Path, model_registry: Path
) -> None:
    import urllib.error
    import urllib.request

    from dicom_node.ops.server import start_monitoring
    from tests.harness.net import free_port

    def status(port: int, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return err.code

    base = {"data_dir": tmp_path, "model_registry_dir": model_registry, "min_free_space_mb": 1}
    shared = Settings(**base, monitoring_port=free_port())
    shared.storage.ensure_dirs()
    upgrade(shared.storage.db_url)
    server = start_monitoring(shared)
    assert server is not None and server.console is None
    try:
        assert status(server.port, "/health/live") == 200
        assert status(server.port, "/login") == 200
    finally:
        server.shutdown()
    apart = Settings(**base, monitoring_port=free_port(), console_port=free_port())
    server = start_monitoring(apart)
    assert server is not None and server.console is not None
    try:
        assert status(server.port, "/health/live") == 200
        assert status(server.port, "/login") == 404
        assert status(server.console.port, "/login") == 200
        assert status(server.console.port, "/metrics") == 404
    finally:
        server.shutdown()
    off = Settings(**base, monitoring_port=free_port(), console_enabled=False)
    server = start_monitoring(off)
    assert server is not None
    try:
        assert status(server.port, "/login") == 404
    finally:
        server.shutdown()


# --- DICOMweb senders' tokens -------------------------------------------------------------------
def test_an_admin_makes_a_token_shown_once_and_removes_it(env: Env) -> None:
    from store.tokens import Tokens

    admin = env.login()
    made = admin.post("/tokens", data={"csrf_token": csrf_of(admin, "/tokens"), "name": "vna1"})
    assert made.status_code == 200, made.text
    token = re.search(r'<code id="token">([^<]+)</code>', made.text)
    assert token and Tokens(env.store).authenticate(token.group(1)) == "vna1"
    listing = admin.get("/tokens").text
    assert "vna1" in listing and token.group(1) not in listing, "shown once, on the POST only"
    gone = admin.post("/tokens/vna1/remove", data={"csrf_token": csrf_of(admin, "/tokens")})
    assert gone.status_code == 303
    assert Tokens(env.store).authenticate(token.group(1)) is None
    actions = [(e["action"], e["outcome"]) for e in env.events() if e["event"] == "action"]
    assert actions == [("add-token", "accepted"), ("remove-token", "accepted")]
    assert token.group(1) not in env.audit_path.read_text()


def test_a_viewer_can_neither_see_nor_make_tokens(env: Env) -> None:
    viewer = env.login("victor")
    assert viewer.get("/tokens").status_code == 403
    refused = viewer.post("/tokens", data={"csrf_token": csrf_of(viewer), "name": "x"})
    assert refused.status_code == 403 and "Only an admin may do this" in refused.text
    assert 'href="/tokens"' not in viewer.get("/").text
