"""``deepcovid demo``: the whole path on one machine in one command, for a newcomer's first minutes.

It starts ``deepcovid serve`` as a child process on the embedded defaults -- in a temporary (or
given) data folder, on free (or given) ports of 127.0.0.1, with no destination, so the results
stay in that folder -- sends sample chest X-rays with our own sender (which proposes the
compressed transfer syntax each file is in; ``storescu`` does that only when told ``-xv`` or
``-xw``), waits until every job has ended, and tells per instance the finding, the probability
and where the result objects are: the Structured Report (and its HTML rendering by dcmtk's
``dsr2html`` when installed), the heatmap overlay (and a PNG of it) and the Parametric Map. Then
it stops the service, or keeps it running until Ctrl-C (``--keep-running``).

The child sees none of the environment's storage, network, security or destination settings and
no ``DEEPCOVID_CONFIG``: a demo must never write into a live data folder nor send to a real
PACS. The model and compute settings (:data:`PASS_THROUGH`) do pass, so ``DEEPCOVID_DEVICE=cuda``
or another registry work as they would for the service.

It composes the services (the node and worker through ``serve``, the job store, the DICOM
client), so it lives beside the CLI rather than below it; the command only parses and prints.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UsageError, UserError
from deepcovid.runtime import stop_process_group

REPOSITORY = Path(__file__).resolve().parents[1]
SAMPLE_DICOM_DIR = REPOSITORY.parent / "shared" / "data" / "dicom"
"""The sample chest X-rays beside a checkout (``../shared/data/dicom``), when present."""
CALLED_AE = "DEEPCOVID"
CALLING_AE = "DEMO"
HOST = "127.0.0.1"
PASS_THROUGH = (
    "model_registry_dir",
    "device",
    "engine",
    "torch_threads",
    "occlusion_window",
    "occlusion_stride",
    "occlusion_fill",
    "worker_concurrency",
    "min_free_space_mb",
    "log_level",
)
"""Settings the demo's service takes from the environment: which model runs and how fast."""
RESULT_KINDS = {
    "sr": "structured report",
    "sc": "heatmap overlay",
    "pm": "parametric map",
    "pr": "presentation state",
}
RENDER_DIR = "demo"


@dataclass(frozen=True)
class DemoOptions:
    """What ``deepcovid demo`` was asked: where the images are, where and how to run."""

    dicom_dir: Path | None = None
    data_dir: Path | None = None
    port: int | None = None
    monitoring_port: int | None = None
    keep_running: bool = False
    timeout_s: float = 900.0


@dataclass
class Outcome:
    """What became of one sent file."""

    file: Path
    sop_instance_uid: str | None = None
    sent: bool = False
    error: str | None = None
    state: str | None = None
    finding: str | None = None
    probability: float | None = None
    threshold: float | None = None
    model_version: str | None = None
    reason: str | None = None
    results: dict[str, Path] = field(default_factory=dict)
    renderings: dict[str, Path] = field(default_factory=dict)


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0, read it back)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def sample_files(dicom_dir: Path | None) -> list[Path]:
    """The DICOM files to send: under ``dicom_dir``, else the samples beside the checkout."""
    from dicom_client.files import collect_files

    folder = dicom_dir
    if folder is None:
        if not SAMPLE_DICOM_DIR.is_dir():
            raise UsageError(
                f"no sample chest X-rays at {SAMPLE_DICOM_DIR}",
                "pass --dicom-dir with a folder of chest CR/DX DICOM files",
            )
        folder = SAMPLE_DICOM_DIR
    if not folder.is_dir():
        raise UsageError(f"--dicom-dir {folder} is not a folder", "name a folder of DICOM files")
    files = list(collect_files([folder]))
    if not files:
        raise UsageError(f"no DICOM files under {folder}", "name a folder of DICOM files")
    return files


def service_environment(
    base: Mapping[str, str], data_dir: Path, port: int, monitoring_port: int
) -> dict[str, str]:
    """The demo service's environment: ``base`` without ``DEEPCOVID_*`` (but
    :data:`PASS_THROUGH`), plus the demo's folder and ports on loopback."""
    keep = {f"DEEPCOVID_{name.upper()}" for name in PASS_THROUGH}
    env = {k: v for k, v in base.items() if not k.startswith("DEEPCOVID_") or k in keep}
    env.update(
        {
            "DEEPCOVID_DATA_DIR": str(data_dir),
            "DEEPCOVID_DATABASE_URL": job_store_url(data_dir),
            "DEEPCOVID_BIND_ADDRESS": HOST,
            "DEEPCOVID_PORT": str(port),
            "DEEPCOVID_AE_TITLE": CALLED_AE,
            "DEEPCOVID_MONITORING_BIND": HOST,
            "DEEPCOVID_MONITORING_PORT": str(monitoring_port),
        }
    )
    return env


def job_store_url(data_dir: Path) -> str:
    """The demo's job store: SQLite in its data folder (the embedded default, written out so
    the demo reads the very store its service writes)."""
    return f"sqlite:///{data_dir / 'jobs.sqlite'}"


class Demo:
    """One demo run: start the service, send, wait, render, stop (see the module docstring)."""

    def __init__(self, options: DemoOptions, say: Callable[[str], None] = print) -> None:
        self.options = options
        self.say = say
        self.files = sample_files(options.dicom_dir)
        self.data_dir = (
            options.data_dir.expanduser().resolve()
            if options.data_dir
            else Path(tempfile.mkdtemp(prefix="deepcovid-demo-"))
        )
        self.port = options.port or free_port()
        self.monitoring_port = options.monitoring_port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.data_dir / RENDER_DIR / "service.log"

    # --- the service ------------------------------------------------------------------------
    def start(self) -> None:
        """Start ``deepcovid serve`` in its own process group and wait until it answers C-ECHO."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log.parent.mkdir(exist_ok=True, mode=0o700)
        env = service_environment(os.environ, self.data_dir, self.port, self.monitoring_port)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deepcovid.cli", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.say(
            f"service starting: {CALLED_AE}@{HOST}:{self.port}, health "
            f"http://{HOST}:{self.monitoring_port}/health/ready, data folder {self.data_dir}"
        )
        self._wait_for_echo(timeout_s=min(self.options.timeout_s, 180.0))

    def _wait_for_echo(self, timeout_s: float) -> None:
        from dicom_client.echo import echo
        from dicom_client.scu import Destination

        destination = Destination(CALLED_AE, HOST, self.port)
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise UserError(
                    f"the service stopped at start (exit status {self.proc.returncode}): "
                    f"{self._log_tail()}",
                    f"its log is {self.log}",
                )
            if echo(destination, calling_ae=CALLING_AE, timeout_s=2.0).ok:
                return
            if time.monotonic() > deadline:
                raise UserError(
                    f"the service did not answer C-ECHO within {timeout_s:.0f} s",
                    f"its log is {self.log}",
                )
            time.sleep(0.5)

    def _log_tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = text.strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def stop(self) -> None:
        """Stop the service (warm shutdown, then SIGKILL after a grace period)."""
        if self.proc is not None:
            stop_process_group(self.proc)

    # --- the instances ----------------------------------------------------------------------
    def send(self) -> list[Outcome]:
        """Send every file with our sender; one :class:`Outcome` per file, in order."""
        from dicom_client.scu import Destination, Sender

        sender = Sender(Destination(CALLED_AE, HOST, self.port), calling_ae=CALLING_AE)
        report = sender.send_files(self.files)
        outcomes = []
        for path, result in zip(self.files, report.results, strict=True):
            outcomes.append(
                Outcome(
                    file=path,
                    sop_instance_uid=result.sop_instance_uid,
                    sent=result.ok,
                    error=None if result.ok else result.error,
                )
            )
        sent = sum(o.sent for o in outcomes)
        self.say(f"sent {sent} of {len(outcomes)} file(s) from {self.files[0].parent}")
        return outcomes

    def wait(self, outcomes: Sequence[Outcome]) -> None:
        """Wait until every sent instance's job has ended (or the timeout); fill the outcomes."""
        from store import JobStore
        from store.outbox import Outbox

        store = JobStore(job_store_url(self.data_dir))
        outbox = Outbox(store)
        pending = [o for o in outcomes if o.sent and o.sop_instance_uid]
        deadline = time.monotonic() + self.options.timeout_s
        try:
            while pending and time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise UserError(
                        f"the service stopped (exit status {self.proc.returncode}): "
                        f"{self._log_tail()}",
                        f"its log is {self.log}",
                    )
                for outcome in list(pending):
                    assert outcome.sop_instance_uid is not None
                    job = store.get_by_uid(outcome.sop_instance_uid)
                    if job is None or not job.is_final:
                        continue
                    pending.remove(outcome)
                    outcome.state, outcome.reason = job.state, job.reason
                    outcome.finding, outcome.probability = job.finding, job.probability
                    outcome.threshold, outcome.model_version = job.threshold, job.model_version
                    outcome.results = {r.kind: Path(r.path) for r in outbox.for_job(job.id)}
                    self.say(f"  {outcome.file.name}: {job.state}")
                if pending:
                    time.sleep(0.5)
        finally:
            store.engine.dispose()
        for outcome in pending:
            outcome.error = f"no result within {self.options.timeout_s:.0f} s"

    def render(self, outcomes: Sequence[Outcome]) -> None:
        """HTML of each SR (dsr2html, when dcmtk is installed) and a PNG of each overlay."""
        folder = self.data_dir / RENDER_DIR
        dsr2html = shutil.which("dsr2html")
        for outcome in outcomes:
            stem = outcome.file.stem
            sr, sc = outcome.results.get("sr"), outcome.results.get("sc")
            if sr is not None and dsr2html:
                html = folder / f"{stem}-sr.html"
                done = subprocess.run(
                    [dsr2html, str(sr), str(html)], capture_output=True, timeout=60, check=False
                )
                if done.returncode == 0:
                    outcome.renderings["sr"] = html
            if sc is not None:
                png = folder / f"{stem}-overlay.png"
                if overlay_png(sc, png):
                    outcome.renderings["sc"] = png


def overlay_png(sc_path: Path, png_path: Path) -> bool:
    """Write the Secondary Capture overlay's pixels as a PNG; False when they cannot be read."""
    import numpy as np
    from PIL import Image
    from pydicom import dcmread

    try:
        pixels = np.asarray(dcmread(sc_path).pixel_array)
        if pixels.dtype != np.uint8:
            scale = max(float(pixels.max()), 1.0)
            pixels = (pixels.astype(np.float64) * (255.0 / scale)).astype(np.uint8)
        Image.fromarray(pixels).save(png_path)
    except Exception:  # a rendering is a convenience: the DICOM object is the result
        return False
    return True


def describe(outcome: Outcome) -> list[str]:
    """The lines printed for one instance."""
    name = outcome.file.name
    if not outcome.sent:
        return [f"{name}: not sent: {outcome.error}"]
    if outcome.state is None:
        return [f"{name}: {outcome.error}"]
    lines = []
    if outcome.probability is not None:
        threshold = f", threshold {outcome.threshold:.3f}" if outcome.threshold is not None else ""
        lines.append(
            f"{name}: COVID-19 finding {outcome.finding or '?'} (probability "
            f"{outcome.probability:.3f}{threshold}; model {outcome.model_version or '?'})"
        )
    else:
        lines.append(f"{name}: {outcome.state}: {outcome.reason or 'no reason recorded'}")
    for kind, path in outcome.results.items():
        lines.append(f"    {RESULT_KINDS.get(kind, kind):<19} {path}")
        if kind in outcome.renderings:
            label = "as HTML" if kind == "sr" else "as PNG"
            lines.append(f"      {label:<17} {outcome.renderings[kind]}")
    return lines


def run_demo(options: DemoOptions, say: Callable[[str], None] = print) -> int:
    """Run the demo; 0 when every file was sent and its job ended, else 1."""
    demo = Demo(options, say)
    try:
        demo.start()
        outcomes = demo.send()
        demo.wait(outcomes)
        demo.render(outcomes)
        say("")
        for outcome in outcomes:
            for line in describe(outcome):
                say(line)
        say("")
        if not shutil.which("dsr2html"):
            say("(install dcmtk for an HTML rendering of each SR: apt install dcmtk)")
        say(
            f"jobs and their timelines: DEEPCOVID_DATA_DIR={demo.data_dir} deepcovid jobs list "
            f"(or jobs show UID); the service's log: {demo.log}"
        )
        ok = all(o.sent and o.state is not None for o in outcomes)
        if options.keep_running:
            _keep_running(demo, say)
        return 0 if ok else 1
    finally:
        demo.stop()


def _keep_running(demo: Demo, say: Callable[[str], None]) -> None:
    """Serve until Ctrl-C or SIGTERM, saying how to send more."""
    import signal

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    say(
        f"the service keeps running; send more with\n"
        f"  deepcovid send FILE|DIR --to {CALLED_AE}@{HOST}:{demo.port}\n"
        f"  storescu -xw -aec {CALLED_AE} {HOST} {demo.port} FILE   "
        "(-xv for JPEG 2000 lossless, no flag for uncompressed)\n"
        "Ctrl-C stops it."
    )
    assert demo.proc is not None
    try:
        demo.proc.wait()
    except KeyboardInterrupt:
        say("stopping the service")
