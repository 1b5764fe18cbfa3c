"""``jukebox studio`` through ``gradio_client``, against a server this test starts on loopback (tiny-random).

The page's runs must be the CLI's runs: takes, an extended take and two upsampled takes are compared file by
file with what ``jukebox generate``/``continue``/``upsample`` write with the same seed. Also: errors are the
CLI's line, run names and file URLs cannot leave the runs folder, a second job waits and knows its place, and
a job killed with its server resumes from its last window when the server starts again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT
from tests.studio_server import Server

pytest.importorskip("gradio", reason="the studio extra is not installed")
gradio_client = pytest.importorskip("gradio_client", reason="the studio extra is not installed")

COMMON = ("--model", "tiny-random", "--device", "cpu", "--quiet")
SEED = 7
# A run's own files, and the files the studio adds to a run (favourites.json) or a folder (the lock).
IGNORED = {"favourites.json", ".jukebox.lock"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    studio = Server(tmp_path_factory.mktemp("studio") / "runs")
    yield studio
    studio.kill()


def _codes(run: Path, level: int) -> torch.Tensor:
    return load_file(run / f"level_{level}" / "codes.safetensors")["codes"]


def _files(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file() and p.name not in IGNORED}


def _settings(run: Path) -> dict:
    """run.json's settings, with the source run named by its folder's name (the page's runs live elsewhere)."""
    settings = json.loads((run / "run.json").read_text())["settings"]
    if settings.get("prompt") and "run" in settings["prompt"]:
        settings["prompt"]["run"] = Path(settings["prompt"]["run"]).name
    return settings


def _assert_same_run(page: Path, cli: Path) -> None:
    assert _files(page) == _files(cli)
    assert _settings(page) == _settings(cli)
    for name in _files(cli):
        if name.endswith(".safetensors"):
            level = int(name.split("/")[0].removeprefix("level_"))
            assert torch.equal(_codes(page, level), _codes(cli, level)), name
        elif name != "run.json":  # the audio: written from equal codes, byte for byte
            assert (page / name).read_bytes() == (cli / name).read_bytes(), name


def test_takes_extend_upsample_equal_the_cli(server: Server, run_cli, tmp_path: Path) -> None:
    started = time.monotonic()
    takes, queue = server.call("generate", "tiny-random", "unknown", "rock", "", 1.0, 3, SEED, 0.99)
    assert takes == f"tiny-random-rock-seed{SEED}" and f"`{takes}`" in queue
    status = server.wait(takes)
    assert "level 2: done" in status["progress"]
    cli_takes = tmp_path / takes
    args = ("--genre", "rock", "--duration", "1", "-n", "3", "--levels", "2", "--seed", str(SEED))
    assert run_cli("generate", *COMMON, *args, "-o", cli_takes).exit_code == 0
    _assert_same_run(server.runs / takes, cli_takes)

    # The page and the CLI list the same run.
    assert takes in server.call("runs")
    listed = run_cli("runs", server.runs, "--json")
    assert listed.exit_code == 0 and takes in listed.stdout

    longer, _ = server.call("extend", takes, "1", 2.0, SEED, 0.99)
    server.wait(longer)
    cli_longer = tmp_path / longer
    args = ("--takes", "1", "--levels", "2", "--duration", "2", "--seed", str(SEED))
    assert run_cli("continue", cli_takes, *COMMON, *args, "-o", cli_longer).exit_code == 0
    _assert_same_run(server.runs / longer, cli_longer)

    assert server.call("favourite", takes, 2, True) == [2]
    assert server.call("favourite", takes, 0, True) == [0, 2]
    assert json.loads((server.runs / takes / "favourites.json").read_text()) == {"takes": [0, 2]}
    final, _ = server.call("upsample", takes, SEED, 0.99)
    server.wait(final)
    cli_final = tmp_path / final
    args = ("--takes", "0,2", "--seed", str(SEED), "--device", "cpu", "--quiet")
    assert run_cli("upsample", cli_takes, *args, "-o", cli_final).exit_code == 0
    _assert_same_run(server.runs / final, cli_final)
    assert sorted(p.name for p in (server.runs / final / "level_0").glob("*.wav")) == [
        "item_0.wav",
        "item_1.wav",
    ]
    print(f"generate, extend, upsample through the page and the CLI: {time.monotonic() - started:.0f} s")


def test_errors_are_the_cli_line(server: Server, run_cli, tmp_path: Path) -> None:
    cli = run_cli(
        "generate", *COMMON, "--genre", "rok", "--duration", "1", "--levels", "2", "-o", tmp_path / "x"
    )
    assert cli.exit_code == 2
    line = cli.stderr.strip().splitlines()[0].removeprefix("error: ")
    with pytest.raises(gradio_client.exceptions.AppError) as page:
        server.call("generate", "tiny-random", "unknown", "rok", "", 1.0, 1, SEED, 0.99)
    assert str(page.value) == line and "rock" in line
    with pytest.raises(gradio_client.exceptions.AppError, match="--duration must be above 0; got -1"):
        server.call("generate", "tiny-random", "unknown", "rock", "", -1.0, 1, SEED, 0.99)
    with pytest.raises(gradio_client.exceptions.AppError, match="Mark the takes of .* as favourites first"):
        first, _ = server.call("generate", "tiny-random", "unknown", "jazz", "", 1.0, 1, SEED, 0.99)
        server.wait(first)
        server.call("upsample", first, SEED, 0.99)
    with pytest.raises(gradio_client.exceptions.AppError, match="is not offered here"):
        server.call(
            "generate", str(tmp_path), "unknown", "rock", "", 1.0, 1, SEED, 0.99
        )  # a folder as a model


@pytest.mark.parametrize(
    "name", ["..", "../outside", "/etc", "/etc/passwd", "..\\..\\x", "a/../../b", ".studio", "link", "link/x"]
)
def test_run_names_cannot_leave_the_runs_folder(server: Server, tmp_path_factory, name: str) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "run.json").write_text(json.dumps({"format": "jukebox-cli-run", "version": 1, "settings": {}}))
    link = server.runs / "link"
    if not link.is_symlink():
        link.symlink_to(outside)
    for call in (("favourite", name, 0, True), ("extend", name, "0", 2.0, SEED, 0.99),
                 ("upsample", name, SEED, 0.99), ("job_status", name)):  # fmt: skip
        with pytest.raises(gradio_client.exceptions.AppError):
            server.call(*call)
    assert not (outside / "favourites.json").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["run.json"]


def test_file_urls_serve_only_the_runs_folder(server: Server, tmp_path: Path) -> None:
    first, _ = server.call("generate", "tiny-random", "unknown", "country", "", 1.0, 1, SEED, 0.99)
    server.wait(first)
    inside = server.runs / first / "level_2" / "item_0.wav"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")

    def get(path: str) -> int:
        try:
            with urllib.request.urlopen(f"{server.url}gradio_api/file={path}", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    assert get(str(inside)) == 200
    for path in (str(secret), "/etc/passwd", f"{server.runs}/../{secret.name}", f"{server.runs}/link/run.json",
                 f"{inside.parent}/../../../{secret.parent.name}/{secret.name}", "../../../../etc/passwd",
                 str(ROOT / "pyproject.toml")):  # fmt: skip
        assert get(path) in (403, 404), path


def test_jobs_run_one_at_a_time_and_show_their_place(server: Server) -> None:
    # The first job (6 s of two takes: several seconds here) is still running when the next two arrive.
    first, _ = server.call("generate", "tiny-random", "unknown", "classical", "", 6.0, 2, SEED, 0.99)
    second, _ = server.call("generate", "tiny-random", "unknown", "classical", "", 1.0, 1, SEED, 0.99)
    third, queue = server.call("generate", "tiny-random", "unknown", "classical", "", 1.0, 1, SEED, 0.99)
    assert (second, third) == (f"{first}-2", f"{first}-3")  # the same settings get runs of their own
    assert [server.call("job_status", run)["place"] for run in (first, second, third)] == [0, 1, 2]
    assert f"`{second}`: waiting, place 1 in the queue" in queue and f"`{third}`: waiting, place 2" in queue
    for run in (first, second, third):
        server.wait(run)


def test_a_job_killed_with_its_server_resumes_from_its_last_window(tmp_path: Path, run_cli) -> None:
    runs = tmp_path / "runs"
    studio = Server(runs)
    try:
        run, _ = studio.call("generate", "tiny-random", "unknown", "rock", "", 6.0, 2, SEED, 0.99)
        codes = runs / run / "level_2" / "codes.safetensors"
        deadline = time.monotonic() + 240
        while not codes.is_file():  # a window or more is saved
            assert time.monotonic() < deadline and studio.call("job_status", run)["state"] != "done"
            time.sleep(0.2)
    finally:
        studio.kill()
    created = json.loads((runs / run / "run.json").read_text())["created"]
    from safetensors import safe_open

    with safe_open(str(codes), "pt") as f:
        saved = f.metadata()
    assert saved["finished"] == "false" and int(saved["windows_done"]) >= 1
    studio = Server(runs)
    try:
        status = studio.wait(run)
    finally:
        studio.kill()
    assert status["restarts"] == 1
    assert (
        json.loads((runs / run / "run.json").read_text())["created"] == created
    )  # resumed, not started over
    reference = tmp_path / "reference"
    args = ("--genre", "rock", "--duration", "6", "-n", "2", "--levels", "2", "--seed", str(SEED))
    assert run_cli("generate", *COMMON, *args, "-o", reference).exit_code == 0
    _assert_same_run(runs / run, reference)
