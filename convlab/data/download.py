"""Downloading the official CIFAR-10 archive: streamed, MD5-verified, safely extracted
and renamed into place atomically."""

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from convlab.data.cifar10 import (
    CIFAR10_DIRNAME,
    CIFAR10_MD5,
    CIFAR10_URL,
    default_data_dir,
    missing_cifar_files,
)


def _stream_download(url, out, progress, timeout, chunk_size=1 << 16):
    """Copy ``url`` into the binary file ``out``; return the hex MD5 of the bytes written."""
    from tqdm import tqdm

    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("https", "http", "file"):
        raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r}; expected https")
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "convlab-data-utils"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "download"
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
            disable=not progress,
        ) as bar:
            received = 0
            while True:
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise OSError(f"download of {url} truncated: got {received} of {total} bytes")
    return digest.hexdigest()


def _safe_extract(archive, dest):
    """Extract a tar archive into ``dest`` refusing absolute paths, ``..`` and non-regular files."""
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{archive} is not a readable tar archive: {e}") from e
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(f"{archive} is a corrupt tar archive: {e}") from e
        for m in members:
            p = PurePosixPath(m.name)
            if p.is_absolute() or m.name.startswith(("/", "\\")) or ".." in p.parts or (
                ":" in (p.parts[0] if p.parts else "")
            ):
                raise ValueError(f"refusing to extract unsafe path {m.name!r} from {archive}")
            if not (m.isfile() or m.isdir()):
                raise ValueError(
                    f"refusing to extract {m.name!r} from {archive}: only regular files and "
                    "directories are allowed (no links or devices)"
                )
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters; members checked above
            tf.extractall(dest, members=members)


def download_CIFAR10(dest=None, url=CIFAR10_URL, md5=CIFAR10_MD5, progress=True, timeout=60):
    """Download and unpack the official CIFAR-10 python version into ``dest``.

    Inputs:
    - dest: parent directory (created if needed); default :func:`default_data_dir`
      (``$CONVLAB_DATA``, else ``~/.cache/convlab``).
    - url: archive URL (default the official HTTPS address; tests point it at a local server).
    - md5: expected hex MD5 of the archive (default the published one); None skips the check.
    - progress: show a tqdm progress bar.
    - timeout: socket timeout in seconds.

    The archive is streamed to a temporary file beside ``dest``, its MD5 verified, extracted
    (rejecting absolute paths, ``..`` members and links) into a temporary directory beside
    ``dest``, and the ``cifar-10-batches-py`` directory is then renamed into place atomically,
    so an interrupted download never leaves a partial dataset behind. If
    ``dest/cifar-10-batches-py`` already holds every batch nothing is downloaded.

    Returns the path (str) of ``dest/cifar-10-batches-py``.

    Raises ValueError on an MD5 mismatch (the downloaded file is removed) or a malformed
    archive, OSError (e.g. urllib.error.URLError) on network failures.
    """
    dest = Path(os.fspath(dest)).expanduser() if dest is not None else Path(default_data_dir())
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / CIFAR10_DIRNAME
    if not missing_cifar_files(final):
        return str(final)

    fd, tmp_archive = tempfile.mkstemp(prefix=".cifar-10-python-", suffix=".part", dir=dest)
    tmp_dir = None
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream_download(url, out, progress, timeout)
        if md5 is not None and digest != md5.lower():
            raise ValueError(
                f"MD5 mismatch for {url}: expected {md5.lower()}, got {digest}; the download "
                "was corrupted or the file is not the official archive (it has been removed)"
            )
        tmp_dir = tempfile.mkdtemp(prefix=".cifar-10-extract-", dir=dest)
        _safe_extract(tmp_archive, tmp_dir)
        extracted = Path(tmp_dir) / CIFAR10_DIRNAME
        missing = missing_cifar_files(extracted)
        if missing:
            raise ValueError(
                f"archive from {url} has no complete {CIFAR10_DIRNAME}/ directory "
                f"(missing {', '.join(missing)})"
            )
        if final.exists() or final.is_symlink():
            # An incomplete earlier copy: move it aside, then replace it.
            stale = Path(tmp_dir) / "stale"
            os.replace(final, stale)
        try:
            os.replace(extracted, final)
        except OSError:
            if missing_cifar_files(final):  # not a concurrent download that won the race
                raise
    finally:
        if os.path.exists(tmp_archive):
            os.remove(tmp_archive)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return str(final)
