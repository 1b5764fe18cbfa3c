"""The command as a process: start-up cost, --version, python -m, completions."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jukebox_cli

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_help_and_version_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from jukebox_cli.cli.app import main\n"
        "for args in (['--help'], ['--version'], ['reconstruct', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'librosa', 'matplotlib') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_python_dash_m_version() -> None:
    result = _run("-m", "jukebox_cli", "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"jukebox-cli {jukebox_cli.__version__}"


def test_usage_error_exit_code() -> None:
    result = _run("-m", "jukebox_cli", "reconstruct")
    assert result.returncode == 2
    assert "Missing argument" in result.stderr


def test_completion_scripts_are_current() -> None:
    result = _run("scripts/make_completions.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_completion_completes_commands() -> None:
    result = _run(
        "-c",
        "from jukebox_cli.cli.app import main; main([])",
        env={"_JUKEBOX_COMPLETE": "complete_bash", "COMP_WORDS": "jukebox rec", "COMP_CWORD": "1"},
    )
    assert "reconstruct" in result.stdout.split()


@pytest.mark.parametrize(
    "command",
    [("generate",), ("continue",), ("upsample",), ("train", "vqvae"), ("train", "prior"), ("reconstruct",),
     ("analyze",), ("labels",), ("models", "download")],
)  # fmt: skip
def test_help_reads_at_80_columns(run_cli, monkeypatch, command: tuple[str, ...]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli(*command, "--help")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert not re.search(r"--[a-z-]*…", result.stdout), "an option name is cut"
    assert "<bool>" not in result.stdout, "a flag takes no value"
    # It was 211 lines for generate before the panels; train prior has the most options (LoRA, fsdp).
    assert len(lines) < (150 if command == ("train", "prior") else 140)
    if command == ("generate",):
        # Paragraphs are reflowed to the terminal, not broken where the docstring's source lines end.
        assert "long before the upsampling finishes" in result.stdout
        assert "╭─ Length and sampling" in result.stdout and "--alignment" in result.stdout
        assert "--no-alignment" in result.stdout


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_example_is_one_line_at_80_columns(run_cli, monkeypatch) -> None:
    """Rich wraps a long example at 80 columns into two lines that no longer paste as one command: every
    example line of every command's help (a docstring's code block) shows whole, a long one as lines that end
    in ` \\`."""
    import typer

    from jukebox_cli.cli.app import app

    monkeypatch.setenv("COLUMNS", "80")
    cut = []
    for path, command in _commands(typer.main.get_command(app)):
        lines = inspect.cleandoc(command.help or "").splitlines()
        examples = [line.strip() for line in lines if line.startswith("    ") and line.strip()]
        result = run_cli(*path, "--help")
        assert result.exit_code == 0, (path, result.stderr)
        shown = {line.strip() for line in result.stdout.splitlines()}
        cut += [f"jukebox {' '.join(path)}: {example}" for example in examples if example not in shown]
    assert not cut
