"""The README's Python example runs as written, on the shipped demo model."""

from __future__ import annotations

import re
from pathlib import Path

import soundfile as sf

README = Path(__file__).resolve().parents[2] / "README.md"


def _first_python_block(section: str) -> str:
    text = README.read_text(encoding="utf-8")
    body = text[text.index(section) :]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


def test_generation_api_example_runs_as_written(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code = _first_python_block("## Using the engine from Python")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    result, final = namespace["result"], namespace["final"]
    assert len(result.files) == 6 and all(p.is_file() for p in result.files)  # 3 levels x 2 takes
    # The order the README's comment shows: top level first, takes in order.
    assert [(p.parent.name, p.name) for p in result.files[:2]] == [
        ("level_2", "item_0.wav"),
        ("level_2", "item_1.wav"),
    ]
    assert (result.files[-1].parent.name, result.files[-1].name) == ("level_0", "item_1.wav")
    audio, rate = sf.read(tmp_path / "runs/rock/level_0/item_1.wav")
    assert rate == 22050 and len(audio) == 3 * 22050 // 128 * 128
    longer = sf.read(tmp_path / "runs/rock-4s/level_2/item_0.wav")[0]
    assert len(longer) == 4 * 22050 // 128 * 128
    assert final.run == Path("runs/rock-4s-upsampled")
    assert [p.name for p in final.files if p.parent.name == "level_0"] == ["item_0.wav"]
    assert '"model": "demo"' in capsys.readouterr().out or final.to_dict()["model"] == "demo"
