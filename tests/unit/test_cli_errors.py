"""Every ``deepcovid`` command given bad input ends with one clear line and a non-zero status.

Each case runs ``main()`` in this process with the test's own settings (an empty data folder, a
random model registry, free ports): user errors print ``deepcovid <command>: <problem>; <fix>``
on stderr, exit 2 for a wrong argument and 1 for an environment that is not right, and never a
traceback. A new command without a case here fails :func:`test_every_command_has_a_bad_input_case`.
``--debug`` brings the traceback back. Two cases also run as real processes, as a newcomer's shell
sees them, in ``tests/integration/test_cli_console.py``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.settings import get_settings
from deepcovid.cli import build_parser, main
from tests.harness.factories import DICOM_DIR
from tests.harness.net import free_port


@dataclass(frozen=True)
class Case:
    """One command with bad input and what it must say."""

    argv: list[str]
    says: str
    status: int
    env: dict[str, str] = field(default_factory=dict)


def _manifest(tmp: Path) -> str:
    """A manifest with train/val/test rows (the images need not exist: the split is checked
    before any image is read)."""
    path = tmp / "manifest.csv"
    path.write_text(
        "path,label,split\na.jpg,covid,train\nb.jpg,non_covid,val\nc.jpg,covid,test\n",
        encoding="utf-8",
    )
    return str(path)


def cases(tmp: Path, registry: Path) -> dict[str, list[Case]]:
    """Bad-input cases per command (``jobs list``, ``evaluate``...)."""
    manifest = _manifest(tmp)
    reg = ["--registry", str(registry)]
    closed = f"127.0.0.1:{free_port()}"
    empty = tmp / "empty-registry"
    empty.mkdir()
    return {
        "serve": [Case(["serve"], "DEEPCOVID_PORT", 2, {"DEEPCOVID_PORT": "eleven"})],
        "node": [Case(["node"], "ae_title must be 1 to 16", 2, {"DEEPCOVID_AE_TITLE": "X" * 17})],
        "worker": [Case(["worker", "--concurrency", "0"], "worker concurrency 0", 2)],
        "send": [
            Case(["send", str(DICOM_DIR), "--to", "nonsense"], "not of the form AE@host:port", 2),
            Case(
                ["send", str(DICOM_DIR / "RG1_UNCR.dcm"), "--to", f"PACS@{closed}", "--attempts=1"],
                "never answered",
                1,
            ),
        ],
        "jobs list": [Case(["jobs", "list"], "no job store yet", 1)],
        "jobs show": [Case(["jobs", "show", "1.2.3"], "deepcovid db upgrade", 1)],
        "studies list": [Case(["studies", "list"], "no job store yet", 1)],
        "studies show": [Case(["studies", "show", "1.2.3"], "deepcovid db upgrade", 1)],
        "db upgrade": [
            Case(
                ["db", "upgrade"],
                "the job store cannot be used",
                1,
                {"DEEPCOVID_DATABASE_URL": f"postgresql+psycopg://nobody@{closed}/none"},
            )
        ],
        "db current": [Case(["db", "current"], "no job store yet", 1)],
        "config show": [
            Case(["config", "show"], "DEEPCOVID_CONFIG names", 2, {"DEEPCOVID_CONFIG": "/no.toml"})
        ],
        "config docs": [Case(["config", "docs", "--bogus"], "unrecognized arguments", 2)],
        "models list": [
            Case(["models", "--registry", str(tmp / "nope"), "list"], "not a folder", 2)
        ],
        "models show": [Case(["models", *reg, "show", "nope"], "no model version 'nope'", 2)],
        "models activate": [
            Case(["models", *reg, "activate", "nope"], "`deepcovid models list`", 2)
        ],
        "train": [
            Case(["train", "--manifest", str(tmp / "missing.csv")], "does not exist", 2),
            Case(["train", "--manifest", manifest, "--epochs", "0"], "epochs must be at least", 2),
        ],
        "evaluate": [
            Case(["evaluate", *reg, "--model", "nope"], "no model version 'nope'", 2),
            Case(
                ["evaluate", *reg, "--manifest", manifest, "--split", "holdout"],
                "its splits: train, val, test",
                2,
            ),
            Case(["evaluate", *reg, "--manifest", str(tmp / "no.csv")], "does not exist", 2),
        ],
        "compare": [Case(["compare", *reg, "nope1", "nope2"], "no model version 'nope1'", 2)],
        "cv": [
            Case(["cv", "--manifest", str(tmp / "missing.csv")], "does not exist", 2),
            Case(["cv", "--manifest", manifest, "--folds", "1"], "at least 2", 2),
            Case(
                ["cv", "--manifest", manifest, "--summarise", "--only-folds", "0"],
                "trains nothing",
                2,
            ),
            Case(["cv", "--manifest", manifest, "--folds", "900"], "groups cannot fill", 2),
        ],
        "cv-compare": [
            Case(["cv-compare", str(tmp / "no-such-run")], "no cross-validation summary", 2),
        ],
        "threshold": [
            Case(["threshold", *reg, "--model", "nope"], "no model version 'nope'", 2),
            Case(
                ["threshold", *reg, "--manifest", manifest, "--split", "external"],
                "no rows in split 'external'",
                2,
            ),
        ],
        "demo": [Case(["demo", "--dicom-dir", str(tmp / "nowhere")], "is not a folder", 2)],
        "db backup": [Case(["db", "backup", str(tmp / "x.bak")], "no job store at", 1)],
        "db restore": [Case(["db", "restore", str(tmp / "missing.bak")], "cannot read", 1)],
        "db purge": [Case(["db", "purge", "--days", "1"], "no job store yet", 1)],
        "jobs reanalyse": [Case(["jobs", "reanalyse", "1.2.3"], "no job store yet", 1)],
        "jobs resend": [Case(["jobs", "resend", "1.2.3"], "no job store yet", 1)],
        "jobs retry-failed": [Case(["jobs", "retry-failed"], "no job store yet", 1)],
        "users list": [
            Case(
                ["users", "list"],
                "the job store cannot be used",
                1,
                {"DEEPCOVID_DATABASE_URL": f"postgresql+psycopg://nobody@{closed}/none"},
            )
        ],
        "users add": [Case(["users", "add", "alice", "--role", "boss"], "invalid choice", 2)],
        "tokens add": [Case(["tokens", "add", "no spaces"], "invalid user name", 1)],
        "tokens list": [
            Case(
                ["tokens", "list"],
                "the job store cannot be used",
                1,
                {"DEEPCOVID_DATABASE_URL": f"postgresql+psycopg://nobody@{closed}/none"},
            )
        ],
        "tokens remove": [Case(["tokens", "remove", "nobody"], "no token 'nobody'", 1)],
        "users remove": [
            Case(
                ["users", "remove", "nobody"],
                "the job store cannot be used",
                1,
                {"DEEPCOVID_DATABASE_URL": f"postgresql+psycopg://nobody@{closed}/none"},
            )
        ],
        "models ensemble": [
            Case(["models", *reg, "ensemble", "e", "--members", "nope", "x"], "no model version", 2)
        ],
        "models fit-domain": [
            Case(["models", *reg, "fit-domain", "nope"], "no model version 'nope'", 2)
        ],
        "doctor": [
            Case(["doctor"], "FAIL", 1, {"DEEPCOVID_MODEL_REGISTRY_DIR": str(empty)}),
            Case(["doctor"], "invalid settings", 2, {"DEEPCOVID_MIN_FREE_SPACE_MB": "lots"}),
        ],
    }


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every runnable command of ``parser`` (``jobs list``, ``train``...)."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = commands(sub, f"{prefix}{name} ")
                found.extend(nested or [f"{prefix}{name}"])
    return found


def test_every_command_has_a_bad_input_case(tmp_path: Path, model_registry: Path) -> None:
    assert sorted(commands(build_parser())) == sorted(cases(tmp_path, model_registry))


def _run(
    case: Case, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    with monkeypatch.context() as patch:  # the case's variables, restored afterwards
        for key, value in case.env.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        try:
            status = main(case.argv)
        except SystemExit as exc:  # argparse's own usage errors
            status = int(exc.code or 0)
        finally:
            get_settings.cache_clear()
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_bad_input_gives_one_clear_line(
    settings_env: dict[str, str],
    model_registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    failures = []
    for command, command_cases in cases(tmp_path, model_registry).items():
        for case in command_cases:
            status, out, err = _run(case, monkeypatch, capsys)
            text = out + err
            problems = []
            if status != case.status:
                problems.append(f"exit status {status}, expected {case.status}")
            if case.says not in text:
                problems.append(f"does not say {case.says!r}")
            if "Traceback" in text:
                problems.append("prints a traceback")
            if case.status == 2 and not err.strip():
                problems.append("nothing on stderr")
            lines = [line for line in err.splitlines() if line.startswith("deepcovid ")]
            if command != "doctor" and "usage:" not in err and len(lines) != 1:
                problems.append(f"{len(lines)} error lines on stderr")
            if problems:
                failures.append(f"{' '.join(case.argv)}: {'; '.join(problems)}\n{text}")
    assert not failures, "\n\n".join(failures)


def test_the_job_store_line_names_the_fix(
    settings_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = _run(Case(["jobs", "list"], "", 1), monkeypatch, capsys)
    assert status == 1
    assert err.count("\n") == 1
    assert "deepcovid serve" in err and "deepcovid db upgrade" in err
    assert not (Path(settings_env["DEEPCOVID_DATA_DIR"]) / "jobs.sqlite").exists()  # not created


def test_debug_shows_the_traceback(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.errors import UserError

    with pytest.raises(UserError, match="no job store yet"):
        main(["jobs", "list", "--debug"])
    monkeypatch.setenv("DEEPCOVID_LOG_LEVEL", "debug")
    with pytest.raises(UserError):
        main(["jobs", "show", "1.2.3"])


def test_invalid_settings_are_named_with_their_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pydantic import ValidationError

    from common.settings import Settings, settings_problem

    config = tmp_path / "c.toml"
    config.write_text('prot = 1\nae_title = "A"\n')
    monkeypatch.setenv("DEEPCOVID_CONFIG", str(config))
    monkeypatch.setenv("DEEPCOVID_PORT", "x")
    with pytest.raises(ValidationError) as raised:
        Settings()
    text = settings_problem(raised.value)
    assert "setting port = 'x' (DEEPCOVID_PORT)" in text
    assert "unknown setting 'prot'" in text
    assert "\n" not in text


def test_python_m_training_prints_one_line_too(
    model_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.__main__ import main as training_main

    assert training_main(["compare", "--registry", str(model_registry), "x", "y"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m training compare: no model version 'x'")
    assert err.count("\n") == 1


def test_python_m_training_shares_the_debug_switch(model_registry: Path) -> None:
    from common.errors import UsageError
    from training.__main__ import main as training_main

    with pytest.raises(UsageError, match="no model version 'x'"):
        training_main(["compare", "--registry", str(model_registry), "x", "--debug"])
