"""Independent SR and IOD validators the tests run over what the service writes.

- :func:`pixelmed_report`: PixelMed's ``DicomSRValidator`` (Debian ``pixelmed-apps``; the
  validator IHE Connectathons use for AI Results SRs). It checks the SR IOD and the content tree
  against its copy of the PS3.16 templates and context groups: lines starting ``Error:`` and
  warnings ``Content Item not in template``.
- :func:`dciodvfy_errors`: dicom3tools' ``dciodvfy`` (IOD and attribute rules).

:func:`assert_pixelmed_accepts` is what a test calls on an SR file: no error and no item
outside the templates, except the findings listed in :data:`OUTDATED`, where the validator's
copy of the standard is older than the current PS3.16 (each with the text that says so).
Scripts/test-services.sh installs both tools. One JVM per file: the validator takes one file,
and compiling its template stylesheet is most of its time (about 6 s of CPU).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
JAVA_OPTIONS = (
    # The compiled template stylesheet has more XPath operators than the JDK's secure-processing
    # default allows (JAXP0801003: "accumulated '10,001' operators exceeds the '10,000' limit"),
    # so Debian's /usr/bin/DicomSRValidator wrapper fails on JDK 17 before reading the file.
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
    # A short run: the quick JIT compiler only, a third of the CPU time of the default.
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
)
NOT_IN_TEMPLATE = "Content Item not in template"


@dataclass(frozen=True)
class Outdated:
    """A validator finding that the current standard contradicts."""

    pattern: str
    """Regular expression matched against the whole ``Error:`` line."""
    why: str
    """The standard's text and the validator's version that show the finding is outdated."""


OUTDATED = (
    Outdated(
        pattern=(
            r'Procedure reported"\): Code \(43468-8,LN,"XR unspecified body region"\) '
            r"not found in context group 100$"
        ),
        why=(
            "PS3.16 CID 100 'Quantitative Diagnostic Imaging Procedures' (the DCID of TID 1500 "
            "row 4, Procedure reported) lists (43468-8, LN, 'XR unspecified body region') as its "
            "projection radiography member (pydicom 3.0.2's dictionary, generated from the "
            "current standard, has it as codes.cid100.XRUnspecifiedBodyRegion); the Debian "
            "validator (pixelmed 20220618) carries CID 100 version 20190121, which predates it "
            "and has no radiography code at all."
        ),
    ),
)


@dataclass(frozen=True)
class PixelMedReport:
    """What ``DicomSRValidator`` said about one file."""

    output: str
    errors: tuple[str, ...]
    not_in_template: tuple[str, ...]
    complete: bool
    """The validator reached "IOD validation complete" (it did not stop on a bad file)."""

    @property
    def unexplained_errors(self) -> tuple[str, ...]:
        """Errors not explained by :data:`OUTDATED`."""
        return tuple(
            line
            for line in self.errors
            if not any(re.search(known.pattern, line) for known in OUTDATED)
        )


def pixelmed_available() -> bool:
    return PIXELMED_JAR.is_file() and shutil.which("java") is not None


def pixelmed_report(path: Path, timeout: float = 600) -> PixelMedReport:
    """Run PixelMed's ``DicomSRValidator`` on ``path``."""
    if not pixelmed_available():
        raise RuntimeError(
            f"{PIXELMED_JAR} or java is missing: scripts/test-services.sh installs pixelmed-apps"
        )
    proc = subprocess.run(
        [
            "java",
            *JAVA_OPTIONS,
            "-cp",
            str(PIXELMED_JAR),
            "com.pixelmed.validate.DicomSRValidator",
            str(path),
        ],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    lines = output.splitlines()
    return PixelMedReport(
        output=output,
        errors=tuple(line for line in lines if line.startswith("Error")),
        not_in_template=tuple(line for line in lines if NOT_IN_TEMPLATE in line),
        complete="IOD validation complete" in output,
    )


def assert_pixelmed_accepts(path: Path) -> PixelMedReport:
    """``path`` has no validator error (but the :data:`OUTDATED` ones) and no item outside
    the templates; returns the report for further checks."""
    report = pixelmed_report(path)
    assert report.complete, report.output
    assert report.unexplained_errors == (), report.output
    assert report.not_in_template == (), report.output
    return report


def dciodvfy_errors(path: Path) -> list[str]:
    """``dciodvfy``'s error lines for ``path`` (it reports on stderr)."""
    proc = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=300
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
