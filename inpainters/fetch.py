"""Downloads for `brgen weights fetch`, the only code in brgen that reaches the network.

Single files come over plain HTTP(S) into `<name>.part`, resume with a `Range` request after an
interrupted transfer, and are renamed to their final name only after their size and hash match the
registry. A download whose hash differs is deleted, so no file that looks complete is left behind.

Hugging Face repositories come through `huggingface_hub.snapshot_download` (which resumes on its own) at
the commit the requested revision resolves to. Every fetched file is then compared with the hash the Hub
publishes: sha256 for LFS files, the git blob id for the others. The commit and hashes are written to
`.brgen-fetch.json` in the download folder, so `brgen weights check` can verify them offline later.
"""

from __future__ import annotations

import fnmatch
import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from brgen_build.errors import BrgenError
from inpainters.weights import FETCH_RECORD, Component, file_digest, git_blob_sha1

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
_TRANSIENT_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


class FetchError(BrgenError):
    """A download failed or its content is not the published file."""


@dataclass
class FetchResult:
    component: Component
    path: Path
    action: str  # `downloaded`, `present` or `manual`


def fetch_component(entry: Component, root: Path, progress: bool = True) -> FetchResult:
    """Download one component into the weights folder `root`; a `manual` component is only looked for."""
    if entry.source == "url":
        return fetch_url(entry, root, progress=progress)
    if entry.source == "hub":
        return fetch_hub(entry, root)
    path = entry.default_path(root)
    return FetchResult(entry, path, "manual" if entry.missing_files(path) else "present")


def fetch_url(entry: Component, root: Path, retries: int = 5, timeout: float = 60.0, backoff: float = 2.0, progress: bool = True) -> FetchResult:
    """Download a single-file component into `root`, resuming a `.part` file left by an earlier attempt.

    Raises:
        FetchError: the server refused the request, the transfer kept failing after `retries` retries, or the
            content's hash differs from the registry (the partial file is deleted in that case).
    """
    target = entry.download_path(root)
    algorithm, expected = entry.digest or ("sha256", None)
    if target.is_file():
        if expected is None or file_digest(target, algorithm) == expected:
            return FetchResult(entry, target, "present")
        logger.warning("%s has the wrong %s; downloading it again", target, algorithm)

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    for attempt in range(retries + 1):
        try:
            if _transfer(entry.url, partial, timeout, progress):
                break
            reason = "the server closed the connection early"
        except _TRANSIENT_ERRORS as error:
            if isinstance(error, urllib.error.HTTPError) and error.code < 500 and error.code != 429:
                raise FetchError(f"{entry.method}: {entry.url} returned HTTP {error.code} {error.reason}; check the URL in the weight registry") from None
            reason = f"{type(error).__name__}: {error}"
        if attempt == retries:
            raise FetchError(
                f"{entry.method}: downloading {entry.url} failed {retries + 1} times (last: {reason}); "
                f"{partial} keeps the {_size(partial)} received so far and the next fetch resumes from there"
            )
        delay = backoff * 2**attempt
        logger.warning("%s: download of %s interrupted (%s); retrying from byte %d in %.0f s", entry.method, entry.url, reason, _size(partial), delay)
        time.sleep(delay)

    if entry.size is not None and _size(partial) != entry.size:
        received = _size(partial)
        partial.unlink()
        raise FetchError(f"{entry.method}: {entry.url} gave {received} bytes, the registry expects {entry.size}; the download was deleted, fetch again")
    if expected is not None:
        actual = file_digest(partial, algorithm)
        if actual != expected:
            partial.unlink()
            raise FetchError(
                f"{entry.method}: {entry.url} gave a file with {algorithm} {actual}, expected {expected}; "
                "the download was deleted. Check the URL, or whether a proxy rewrites the file, and fetch again"
            )
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    return FetchResult(entry, target, "downloaded")


def _transfer(url: str, partial: Path, timeout: float, progress: bool) -> bool:
    """Append the rest of `url` to `partial`; return True when the file is complete.

    A server that ignores `Range` (status 200) restarts the file, and so does a 206 response for another range.
    A 416 response to a range that starts at the current size means the file was already complete.
    """
    offset = _size(partial)
    request = urllib.request.Request(url, headers={"User-Agent": "brgen-weights-fetch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            return True
        raise
    with response:
        content_range = response.headers.get("Content-Range", "")
        if offset and (response.status != 206 or not content_range.startswith(f"bytes {offset}-")):
            offset = 0
        remaining = response.headers.get("Content-Length")
        total = offset + int(remaining) if remaining is not None else None
        with open(partial, "ab" if offset else "wb") as handle, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=partial.name, disable=not progress
        ) as bar:
            while chunk := response.read(CHUNK_SIZE):
                handle.write(chunk)
                bar.update(len(chunk))
    return total is None or _size(partial) >= total


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def fetch_hub(entry: Component, root: Path, api=None, snapshot_download: Callable | None = None) -> FetchResult:
    """Download a Hugging Face component into the weights folder `root` and check every file against the Hub's hashes.

    Args:
        api: an `HfApi`-like object with `model_info(repo_id, revision=, files_metadata=True)`; tests pass a stand-in.
        snapshot_download: `huggingface_hub.snapshot_download` or a stand-in with its signature.
    """
    folder = entry.download_path(root)
    if api is None or snapshot_download is None:
        import huggingface_hub

        api = api or huggingface_hub.HfApi()
        snapshot_download = snapshot_download or huggingface_hub.snapshot_download
    try:
        info = api.model_info(entry.repo, revision=entry.revision, files_metadata=True)
    except Exception as error:  # huggingface_hub raises its own HTTP, offline and not-found errors
        raise FetchError(f"{entry.method}: cannot read {entry.repo} at revision {entry.revision} from the Hugging Face Hub ({type(error).__name__}: {error})") from None

    published = {}
    for sibling in info.siblings or []:
        if entry.allow_patterns and not any(fnmatch.fnmatch(sibling.rfilename, pattern) for pattern in entry.allow_patterns):
            continue
        if sibling.lfs is not None:
            published[sibling.rfilename] = {"sha256": sibling.lfs.sha256, "size": sibling.lfs.size}
        else:
            published[sibling.rfilename] = {"git_sha1": sibling.blob_id, "size": sibling.size}
    if not published:
        raise FetchError(f"{entry.method}: {entry.repo} at {info.sha} has no files matching {list(entry.allow_patterns)}")

    try:
        snapshot_download(entry.repo, revision=info.sha, local_dir=str(folder), allow_patterns=list(entry.allow_patterns) or None)
    except Exception as error:  # network and Hub errors; files already complete stay for the next attempt
        raise FetchError(f"{entry.method}: downloading {entry.repo} at {info.sha} into {folder} failed ({type(error).__name__}: {error}); fetch again to resume") from None

    problems = []
    for name, expected in published.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} was not downloaded")
        elif "sha256" in expected and file_digest(path) != expected["sha256"]:
            problems.append(f"{name}: sha256 differs from the Hub's {expected['sha256']}")
            path.unlink()
        elif "git_sha1" in expected and git_blob_sha1(path) != expected["git_sha1"]:
            problems.append(f"{name}: git blob id differs from the Hub's {expected['git_sha1']}")
            path.unlink()
    if problems:
        raise FetchError(f"{entry.method}: {entry.repo} at {info.sha}: " + "; ".join(problems) + ". Files that differed were deleted; fetch again")

    _write_record(folder, entry, info.sha, published)
    return FetchResult(entry, entry.default_path(root), "downloaded")


def _write_record(folder: Path, entry: Component, commit: str, files: dict) -> None:
    """Merge this component's files into the folder's fetch record (components may share a repository)."""
    record_path = folder / FETCH_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record.get("commit") not in (None, commit):
        record["files"] = {}
    record.update({"repo": entry.repo, "revision": entry.revision, "commit": commit})
    record.setdefault("files", {}).update(files)
    temporary = record_path.with_name(record_path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(temporary, record_path)
