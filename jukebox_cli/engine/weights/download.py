"""Downloads: hub files through huggingface_hub, original files from a list of mirrors.

Small hub files (config, index) go through ``hf_hub_download`` and its cache. Weight files are many GB, and
huggingface_hub 2.4 deliberately restarts an interrupted transfer from zero in a new process (each attempt
writes a process-unique temporary file and deletes it on failure) and never checks a file's hash. So weight
files, from the hub or from OpenAI's storage, take one path here: huggingface_hub's ``http_get`` into a
``<file>.incomplete`` at a fixed path, resumed with a Range request by whichever process comes next (under an
inter-process lock), size-checked, sha256-checked where the hash is known (the hub publishes one for every
LFS file; a mismatch deletes the file and fetches it once more), and only then moved into place.

Environment variables are read when a download starts, not when huggingface_hub was imported:
``HF_HUB_OFFLINE`` (never touch the network), ``HF_ENDPOINT`` (another hub), ``HF_TOKEN`` (private or gated
repositories, read by huggingface_hub itself).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from jukebox_cli.engine.errors import (
    CheckpointNotFound,
    ChecksumMismatch,
    DiskSpaceError,
    NetworkError,
    RemoteFileMissing,
)
from jukebox_cli.engine.progress import Advanced, ProgressCallback, StageFinished, StageStarted, noop
from jukebox_cli.engine.weights.cache import ModelCache, sha256_file

# jukebox-cli sends no telemetry; huggingface_hub reads this once, when it is first imported.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Room left free besides a download: a full disk breaks more than this download.
DISK_MARGIN = 64 * 2**20


def is_offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))  # fmt: skip


def hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
# Hosts that accepted a TCP connection in this process.
_reachable_hosts: set[tuple[str, int]] = set()


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url``'s server accepts a connection at all (once it has, it is not asked again).

    huggingface_hub retries a host it cannot resolve or connect to five times with backoff: 25 s of "Retrying"
    lines before the same failure. A machine with no route to the hub is known in one connection attempt.
    Behind a proxy the answer is left to the real request (True): the proxy, not the host, is what is reached.
    """
    parts = urlparse(url)
    if not parts.hostname or parts.scheme not in ("http", "https"):
        return True
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return True
    key = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    if key not in _reachable_hosts:  # a "no" is asked again next time: the network may be back
        try:
            socket.create_connection(key, timeout=timeout).close()
        except OSError:
            return False
        _reachable_hosts.add(key)
    return True


def hub_base_url() -> str:
    from huggingface_hub import constants

    return hub_endpoint() or constants.ENDPOINT


def unreachable_reason(url: str) -> str:
    return f"{urlparse(url).hostname} cannot be reached (no network?)"


def _bar_class(progress: ProgressCallback, stage: str) -> type:
    """A tqdm stand-in for huggingface_hub's ``tqdm_class`` hook: bytes become progress events."""

    class _Bar:
        def __init__(self, *args, total: int | None = None, initial: int = 0, **kwargs) -> None:
            progress(StageStarted(stage, total, "B"))
            if initial:
                progress(Advanced(stage, initial))

        def update(self, n: int | float = 1) -> None:
            if n:
                progress(Advanced(stage, int(n)))

        def close(self) -> None:
            progress(StageFinished(stage))

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    return _Bar


def check_space(cache: ModelCache, needed: int, what: str) -> None:
    """Refuse to start when ``needed`` bytes will not fit in the cache's file system.

    Raises:
        DiskSpaceError: not enough free space.
    """
    free = cache.free_bytes()
    if needed + DISK_MARGIN > free:
        raise DiskSpaceError(
            f"{what} needs {needed / 1e9:.2f} GB but only {free / 1e9:.2f} GB is free under {cache.root}."
        )


def _network_error(err: BaseException, what: str) -> NetworkError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return NetworkError(f"Could not download {what}: {first}")


def _hub_errors(what: str, repo_id: str, revision: str | None, filename: str):
    """A context manager mapping huggingface_hub's exceptions onto ours."""
    import contextlib

    from huggingface_hub import errors as hf_errors

    @contextlib.contextmanager
    def mapping():
        try:
            yield
        except hf_errors.LocalEntryNotFoundError as err:
            reason = (
                "offline mode is on (HF_HUB_OFFLINE)" if is_offline() else unreachable_reason(hub_base_url())
            )
            raise NetworkError(f"{what} is not in the cache and {reason}.") from err
        except hf_errors.GatedRepoError as err:
            raise CheckpointNotFound(
                f"{repo_id} is gated: accept its terms on the hub and set HF_TOKEN."
            ) from err
        except hf_errors.RepositoryNotFoundError as err:
            raise CheckpointNotFound(
                f"No hub repository {repo_id!r} (if it is private, set HF_TOKEN)."
            ) from err
        except hf_errors.RevisionNotFoundError as err:
            raise CheckpointNotFound(f"{repo_id} has no revision {revision!r}.") from err
        except hf_errors.EntryNotFoundError as err:
            raise RemoteFileMissing(f"{repo_id} has no file {filename!r}.") from err
        except (hf_errors.HfHubHTTPError, OSError, ConnectionError) as err:
            raise _network_error(err, what) from err
        except Exception as err:  # httpx2 transport errors do not share a base class with OSError
            if type(err).__module__.startswith(("httpx", "httpcore")):
                raise _network_error(err, what) from err
            raise

    return mapping()


def hub_file(
    cache: ModelCache,
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    progress: ProgressCallback = noop,
) -> Path:
    """A small file of a hub repository (config, index), through huggingface_hub's cache.

    Raises:
        CheckpointNotFound: no such repository, revision or file (or a private one without ``HF_TOKEN``).
        NetworkError: offline or unreachable and the file is not cached.
    """
    from huggingface_hub import hf_hub_download

    what = f"{filename} from {repo_id}" + (f" at {revision}" if revision else "")
    # An unreachable hub still serves what its cache holds, without the retries.
    local_only = is_offline() or not reachable(hub_base_url())
    with _hub_errors(what, repo_id, revision, filename):
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache.hub_dir,
                endpoint=hub_endpoint(),
                local_files_only=local_only,
                tqdm_class=_bar_class(progress, f"download {filename}"),
            )  # fmt: skip
        )


def hub_weight_file(
    cache: ModelCache,
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    extra_bytes: int = 0,
    progress: ProgressCallback = noop,
) -> Path:
    """A weight file of a hub repository: resumable across processes and sha256-checked.

    Stored as ``downloads/<repo>/<sha256>``; the hub's metadata gives the hash (the LFS oid) and size.

    Raises:
        CheckpointNotFound, NetworkError, ChecksumMismatch, DiskSpaceError.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    what = f"{filename} from {repo_id}" + (f" at {revision}" if revision else "")
    if is_offline():
        raise NetworkError(f"{what} is not in the cache and offline mode is on (HF_HUB_OFFLINE).")
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=hub_endpoint())
    if not reachable(url):
        raise NetworkError(f"{what} is not in the cache and {unreachable_reason(url)}.")
    with _hub_errors(what, repo_id, revision, filename):
        meta = get_hf_file_metadata(url)
    sha = (meta.etag or "").strip('"')
    if not _SHA256.fullmatch(sha):
        raise CheckpointNotFound(f"{what} is not a large (LFS) file with a published sha256.")
    dest = cache.root / "downloads" / repo_id.replace("/", "--") / sha
    with cache.lock(f"download-{sha}"):
        if dest.is_file():
            return dest  # moved into place only after its hash matched
        for _attempt in range(2):
            with _hub_errors(what, repo_id, revision, filename):
                _resumable_get(
                    cache, url, dest, meta.size, build_hf_headers(), filename, extra_bytes, progress
                )
            progress(StageStarted(f"verify {filename}", None, "file"))
            actual = sha256_file(_incomplete(dest))
            progress(StageFinished(f"verify {filename}"))
            if actual == sha:
                os.replace(_incomplete(dest), dest)
                return dest
            _incomplete(dest).unlink()  # a file that fails its hash is never used, nor resumed
        raise ChecksumMismatch(
            f"{what} does not match its sha256 (expected {sha[:12]}…, got {actual[:12]}…) even after fetching "
            "it again; the corrupt copy was deleted."
        )


def _incomplete(dest: Path) -> Path:
    return dest.with_name(dest.name + ".incomplete")


def _resumable_get(
    cache: ModelCache,
    url: str,
    dest: Path,
    size: int | None,
    headers: dict,
    name: str,
    extra_bytes: int,
    progress: ProgressCallback,
) -> None:
    """Append ``url`` to ``dest``'s ``.incomplete`` file from where it stopped (caller holds the lock)."""
    from huggingface_hub.file_download import http_get

    partial = _incomplete(dest)
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have > size:
        partial.unlink()
        have = 0
    check_space(cache, (size or 0) - have + extra_bytes, f"Downloading {name}")
    with open(partial, "ab") as handle:
        http_get(url, handle, resume_size=have, headers=headers, expected_size=size, displayed_filename=name,
                 tqdm_class=_bar_class(progress, f"download {name}"))  # fmt: skip
    if size is not None and partial.stat().st_size != size:
        raise NetworkError(f"{url}: got {partial.stat().st_size} of {size} bytes.")


def _head_size(url: str) -> int | None:
    """The size a server announces for ``url`` (None when it gives none).

    Raises:
        CheckpointNotFound: the server answers that the file does not exist.
        NetworkError: the server cannot be reached.
    """
    from huggingface_hub.utils import get_session

    if not reachable(url):
        raise NetworkError(f"{unreachable_reason(url)}.")
    try:
        response = get_session().head(url, follow_redirects=True, timeout=15)
    except Exception as err:
        raise _network_error(err, url) from err
    if response.status_code in (403, 404, 410):
        raise RemoteFileMissing(f"{url} answered {response.status_code}.")
    if response.status_code >= 400:
        raise NetworkError(f"{url} answered {response.status_code}.")
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def url_file(
    cache: ModelCache,
    relative: str,
    mirrors: list[str],
    *,
    dest: Path | None = None,
    extra_bytes: int = 0,
    progress: ProgressCallback = noop,
) -> Path:
    """Download ``relative`` from the first mirror that has it, into the cache, resumably.

    No hash was ever published for OpenAI's files, so the announced size is what is checked here (the
    caller records the sha256 for later verification, and the conversion checks every key and shape).

    Args:
        cache: the cache.
        relative: the path after a mirror prefix (e.g. ``5b/vqvae.pth.tar``).
        mirrors: URL prefixes ending in ``/``; ``file://`` ones name local folders, whose files are returned
            where they are (never copied, and never deleted by the caller).
        dest: where to store it (default: ``openai/<relative>`` in the cache).
        extra_bytes: space needed besides the download (the converted file), for the disk check.
        progress: ``download <name>`` byte stage.

    Raises:
        NetworkError: offline, or every mirror failed (the message lists why).
        DiskSpaceError: the file will not fit.
    """
    dest = dest or cache.original_path(relative)
    with cache.lock(f"url-{dest.relative_to(cache.root)}"):
        if dest.is_file():
            return dest
        if is_offline():
            mirrors = [m for m in mirrors if m.startswith("file://")]
            if not mirrors:
                raise NetworkError(f"{relative} is not in the cache and offline mode is on (HF_HUB_OFFLINE).")
        failures, missing = [], []
        for prefix in mirrors:
            url = prefix + relative
            if prefix.startswith("file://"):  # a local copy (e.g. the original code's cache) is used in place
                local = Path(url2pathname(urlparse(url).path))
                if local.is_file():
                    return local
                failures.append(f"{local} does not exist")
                missing.append(True)
                continue
            try:
                _resumable_get(cache, url, dest, _head_size(url), {}, dest.name, extra_bytes, progress)
            except DiskSpaceError:
                raise
            except (CheckpointNotFound, NetworkError) as err:
                failures.append(str(err))
                missing.append(isinstance(err, RemoteFileMissing))
                continue
            except Exception as err:  # a transfer that failed for good (its partial file stays for resuming)
                failures.append(str(_network_error(err, url)))
                missing.append(False)
                continue
            os.replace(_incomplete(dest), dest)
            return dest
    if missing and all(missing):
        raise RemoteFileMissing(f"No mirror has {relative} ({'; '.join(failures)}).")
    raise NetworkError(
        f"Could not download {relative} from any mirror ({'; '.join(failures) or 'none configured'})."
    )
