"""Regenerate completions/ (bash, zsh, fish) from the app. Never edit those files by hand.

python scripts/make_completions.py          # write them
python scripts/make_completions.py --check  # exit 1 if they are stale (used by the tests)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = {"bash": "jukebox.bash", "zsh": "_jukebox", "fish": "jukebox.fish"}


def generate(shell: str) -> str:
    """The completion script Typer/Click produce for ``shell`` (via the _JUKEBOX_COMPLETE protocol)."""
    env = {**os.environ, "_JUKEBOX_COMPLETE": f"source_{shell}"}
    code = "from jukebox_cli.cli.app import main; main([])"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False, cwd=ROOT
    )
    if not result.stdout.strip():
        raise SystemExit(f"no completion script for {shell}: {result.stderr.strip()}")
    return result.stdout


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for shell, name in FILES.items():
        path = ROOT / "completions" / name
        text = generate(shell)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale completion scripts (run python scripts/make_completions.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
