"""Liveness and readiness of the node: can it take instances and get them analysed?

Readiness is the conjunction of four checks, each reported with a detail a PACS administrator
can act on:

- ``database``: the job store answers a query on the ``jobs`` table;
- ``broker``: a connection to the task broker can be made (short timeouts: a stopped broker
  answers "not ready" in seconds, it does not hang the probe);
- ``spool``: the spool's disk has more free space than the watermark (below it the listener
  answers C-STORE with 0xA700);
- ``model``: the registry names an active version whose card and weights exist, and the
  weights match the card's SHA-256 (hashed once per file version, not on every probe).

The model check reads the registry's files directly: the node never loads a model, and
importing the model code here would add PyTorch to the listener's memory for nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from common.paths import ACTIVE_FILE, CARD_FILE, WEIGHTS_FILE
from store.schema import Job

MIB = 1024 * 1024


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one readiness check."""

    name: str
    ok: bool
    detail: str
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (seconds rounded to milliseconds)."""
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out


def check_database(engine: Engine) -> CheckResult:
    """The job store is reachable and has its schema."""
    try:
        with engine.connect() as conn:
            conn.execute(select(Job.id).limit(1)).all()
    except Exception as exc:
        return CheckResult("database", False, f"job store unreachable: {_short(exc)}")
    return CheckResult("database", True, "job store answers")


def check_broker(url: str, timeout_s: float = 3.0) -> CheckResult:
    """A connection to the broker can be established within ``timeout_s``."""
    from kombu import Connection

    options: dict[str, Any] = {}
    if url.startswith(("redis://", "rediss://")):
        options = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}
    elif url.startswith("sqla+sqlite"):
        options = {"connect_args": {"timeout": timeout_s}}
    try:
        with Connection(url, connect_timeout=timeout_s, transport_options=options) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s
            )
    except Exception as exc:
        return CheckResult("broker", False, f"broker unreachable: {_short(exc)}")
    return CheckResult("broker", True, "broker accepts connections")


def check_spool(
    spool_dir: Path,
    min_free_mb: int,
    disk_usage: Callable[[Path], tuple[int, int, int]] = shutil.disk_usage,
) -> CheckResult:
    """The spool's disk has more free space than the watermark."""
    try:
        free = int(disk_usage(spool_dir)[2])
    except OSError as exc:
        return CheckResult("spool", False, f"spool {spool_dir} unavailable: {_short(exc)}")
    text = f"{free // MIB} MiB free, watermark {min_free_mb} MiB"
    if free < min_free_mb * MIB:
        return CheckResult("spool", False, f"{text}: C-STORE answers 0xA700 until space is freed")
    return CheckResult("spool", True, text)


_VERIFIED_KEPT = 64
"""Weights files whose verdict the model check keeps (an ensemble has several)."""


class ModelCheck:
    """The registry's active version exists and its weights match its card (an ensemble's:
    every member's file against the sha256 of its entry)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._verified: dict[tuple[str, int, int], bool] = {}
        self._lock = threading.Lock()

    def __call__(self) -> CheckResult:
        try:
            return self._check()
        except (OSError, ValueError) as exc:
            return CheckResult("model", False, f"registry {self.root}: {_short(exc)}")

    def _check(self) -> CheckResult:
        active = self.root / ACTIVE_FILE
        if not active.is_file():
            return CheckResult(
                "model", False, f"no active model in {self.root} (`deepcovid models activate`)"
            )
        version = active.read_text(encoding="utf-8").strip()
        folder = self.root / version
        if not version or "/" in version or version.startswith("."):
            return CheckResult("model", False, f"{active} does not name a version")
        card_path = folder / CARD_FILE
        if not card_path.is_file():
            return CheckResult("model", False, f"active version {version}: {card_path} is missing")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        files = [
            (folder / Path(str(m.get("file") or "")).name, str(m.get("sha256") or ""))
            for m in card.get("members") or []
        ] or [(folder / WEIGHTS_FILE, str(card.get("weights_sha256") or ""))]
        for weights, expected in files:
            if not weights.is_file():
                return CheckResult(
                    "model", False, f"active version {version}: {weights} is missing"
                )
            if not self._weights_match(weights, expected):
                return CheckResult(
                    "model", False, f"active version {version}: weights do not match the card"
                )
        return CheckResult("model", True, f"active version {version} ({card.get('architecture')})")

    def _weights_match(self, weights: Path, expected: str) -> bool:
        stat = weights.stat()
        key = (f"{weights}:{expected}", stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key not in self._verified:
                digest = hashlib.sha256()
                with weights.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                if len(self._verified) >= _VERIFIED_KEPT:
                    self._verified.clear()
                self._verified[key] = bool(expected) and digest.hexdigest() == expected
            return self._verified[key]


class Readiness:
    """Runs the readiness checks; :meth:`run` returns ``(ready, results)``."""

    def __init__(self, checks: dict[str, Callable[[], CheckResult]]) -> None:
        self.checks = checks

    def run(self) -> tuple[bool, list[CheckResult]]:
        """Every check, timed; ready when all pass. A check that raises counts as failed."""
        results = []
        for name, check in self.checks.items():
            t0 = time.perf_counter()
            try:
                result = check()
            except Exception as exc:  # a bug in a check must not take the probe down
                result = CheckResult(name, False, f"check failed: {_short(exc)}")
            results.append(
                CheckResult(result.name, result.ok, result.detail, time.perf_counter() - t0)
            )
        return all(r.ok for r in results), results


def _short(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 200 characters (no stack, no secrets)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200]
