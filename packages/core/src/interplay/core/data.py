"""Data files on disk: where they live, how they are downloaded, unpacked and written.

Contract:

* The data root is ``$INTERPLAY_DATA`` (user-expanded, resolved) or ``~/.cache/interplay``; each
  dataset lives in ``<root>/<name>`` (:func:`data_root`, :func:`dataset_dir`). Nothing is created
  until something is written there.
* :func:`download` fetches an ``http``, ``https`` or ``file://`` URL into ``<dest>.part``, checks the
  sha256 when one is given and only then renames the file onto ``dest`` with :func:`os.replace`, so a
  file at ``dest`` is always complete. An interrupted transfer resumes from the ``.part`` file with an
  HTTP ``Range`` request. A file already at ``dest`` with the right checksum is returned without any
  network access.
* :func:`extract_archive` unpacks zip, tar (plain, gz, bz2, xz) and single-file gz archives into a
  temporary directory next to the destination and moves the result into place only once everything
  was extracted; members with absolute paths, ``..`` components or links leading outside are refused.
* :func:`atomic_write` and :func:`atomic_save` write through a temporary file in the target directory
  and rename it over the target, so a reader never sees a half-written file and a failed write leaves
  the previous file untouched.
* Every failure a user can cause is a :class:`~interplay.core.errors.DataError` (or its subclasses
  :class:`~interplay.core.errors.DownloadError` and :class:`~interplay.core.errors.ChecksumError`)
  whose message names the file or URL and what was expected.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import lzma
import os
import re
import secrets
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tqdm import tqdm

from interplay.core.errors import ChecksumError, DataError, DownloadError

__all__ = [
    "ENV_VAR",
    "RemoteFile",
    "atomic_save",
    "atomic_write",
    "data_root",
    "dataset_dir",
    "download",
    "extract_archive",
    "fetch",
    "require_file",
    "sha256sum",
]

ENV_VAR = "INTERPLAY_DATA"

_HASH_CHUNK = 1 << 20
_USER_AGENT = "interplay-data/0.1 (+python-urllib)"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)

# Longest suffixes first: ".tar.gz" must win over ".gz".
_ARCHIVE_FORMATS: tuple[tuple[str, str], ...] = (
    (".tar.gz", "tar"),
    (".tgz", "tar"),
    (".tar.bz2", "tar"),
    (".tar.xz", "tar"),
    (".tar", "tar"),
    (".zip", "zip"),
    (".gz", "gz"),
)
SUPPORTED_ARCHIVE_SUFFIXES = tuple(suffix for suffix, _ in _ARCHIVE_FORMATS)


# --------------------------------------------------------------------------- locations


def data_root() -> Path:
    """The directory that holds every dataset: ``$INTERPLAY_DATA`` or ``~/.cache/interplay``.

    The directory is not created.
    """
    configured = os.environ.get(ENV_VAR, "").strip()
    root = Path(configured) if configured else Path("~") / ".cache" / "interplay"
    return root.expanduser().resolve()


def dataset_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The directory of dataset ``name``: ``<root>/<name>``, with ``root`` defaulting to :func:`data_root`."""
    relative = PurePosixPath(str(name).replace("\\", "/"))
    if not str(name).strip() or relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"invalid dataset name {name!r}: expected a relative name such as 'criteo'")
    base = Path(root).expanduser() if root is not None else data_root()
    return base / name


def require_file(path: str | os.PathLike[str], what: str = "file", hint: str | None = None) -> Path:
    """Return ``path`` as a :class:`Path` if it is an existing file, else raise :class:`DataError`.

    The message reads ``"<what> not found: <path>"``, followed by ``hint`` (for instance how to
    download the file) when one is given.
    """
    resolved = Path(path).expanduser()
    if resolved.is_file():
        return resolved
    message = f"{what} not found: {resolved}"
    if resolved.is_dir():
        message += " (it is a directory, expected a file)"
    if hint:
        message += f"; {hint}"
    raise DataError(message)


def sha256sum(path: str | os.PathLike[str]) -> str:
    """Hex sha256 digest of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(require_file(path), "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- atomic writes


def _temp_name(path: Path, tag: str) -> Path:
    """A name in ``path``'s directory that does not exist yet; keeps the suffix (np.save adds one)."""
    while True:
        candidate = path.with_name(f".{path.stem}.{tag}-{secrets.token_hex(4)}{path.suffix}")
        if not os.path.lexists(candidate):
            return candidate


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path`` atomically.

    On an exception inside the ``with`` block the temporary file is removed and any previous file at
    ``path`` is left untouched. ``mode`` must be a write mode (``"w"``, ``"wb"``, ``"wt"``, ``"w+"``...);
    ``open_kwargs`` (``encoding``, ``newline``...) go to :func:`open`. An existing file's permission
    bits are kept; a new file gets the usual ``0o666 & ~umask``.
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write needs a write mode such as 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temp = _temp_name(target, "tmp")
        try:
            # os.open with 0o666 lets the umask apply, unlike mkstemp's fixed 0o600.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
        os.replace(temp, target)
    except BaseException:
        _remove(temp)
        raise
    _fsync_dir(target.parent)


def atomic_save(write_fn: Callable[[Path], None], path: str | os.PathLike[str]) -> Path:
    """Call ``write_fn(temp_path)`` and rename ``temp_path`` onto ``path``; return ``path``.

    ``temp_path`` lies in ``path``'s directory, does not exist yet and has the same suffix as ``path``
    (so ``np.save`` or ``torch.save`` behave as they would on ``path``). If ``write_fn`` raises, the
    temporary file is removed and any previous file at ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(target, "tmp")
    try:
        write_fn(temp)
        if not os.path.lexists(temp):
            raise DataError(f"cannot save {target}: the writer did not create the temporary file {temp}")
        if temp.is_file():
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        _remove(temp)
        raise
    _fsync_dir(target.parent)
    return target


# --------------------------------------------------------------------------- downloads


def _url_basename(url: str) -> str:
    return urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name)


def _check_url(url: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in {"http", "https", "file"}:
        raise DownloadError(
            f"cannot download {url!r}: expected an http://, https:// or file:// URL "
            "(a local path must be written as a file:// URL)"
        )
    return scheme


def _normalise_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    expected = sha256.strip().lower()
    if not _SHA256_RE.match(expected):
        raise DataError(f"invalid sha256 {sha256!r}: expected 64 hexadecimal digits")
    return expected


def _show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _progress_bar(enabled: bool, total: int | None, initial: int, name: str) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
    )


def _copy_stream(source: IO[bytes], part: Path, append: bool, chunk_size: int, bar: tqdm) -> int:
    """Copy ``source`` into ``part`` (appending or from zero), fsync it; return the bytes copied."""
    copied = 0
    with open(part, "ab" if append else "wb") as sink:
        while chunk := source.read(chunk_size):
            sink.write(chunk)
            copied += len(chunk)
            bar.update(len(chunk))
        sink.flush()
        os.fsync(sink.fileno())
    return copied


def _part_size(part: Path, resume: bool) -> int:
    if not part.exists():
        return 0
    if not resume:
        part.unlink()
        return 0
    return part.stat().st_size


def _fetch_file_url(url: str, part: Path, resume: bool, show: bool, chunk_size: int) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc not in {"", "localhost"}:
        raise DownloadError(f"cannot download {url}: file:// URLs must name a local file")
    source_path = Path(urllib.request.url2pathname(parsed.path))
    if not source_path.is_file():
        raise DownloadError(f"cannot download {url}: no such file {source_path}")
    total = source_path.stat().st_size
    offset = _part_size(part, resume)
    if offset > total:  # longer than the source: not a prefix of it
        part.unlink()
        offset = 0
    with open(source_path, "rb") as source, _progress_bar(show, total, offset, part.stem) as bar:
        source.seek(offset)
        _copy_stream(source, part, offset > 0, chunk_size, bar)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total length) of a ``Content-Range`` header; None where absent or unknown."""
    match = _CONTENT_RANGE_RE.match(header or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _fetch_http_url(url: str, part: Path, resume: bool, show: bool, timeout: float, chunk_size: int) -> None:
    offset = _part_size(part, resume)
    for _ in range(2):  # a second round only after the server rejected our range as inconsistent
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 416 and offset:
                _, total = _content_range(error.headers.get("Content-Range"))
                if total is None or total == offset:
                    return  # the part file already holds every byte; verification decides
                part.unlink()  # the part is longer than the remote file: start again
                offset = 0
                continue
            if 400 <= error.code < 500:
                _remove(part)
            raise DownloadError(f"cannot download {url}: HTTP {error.code} {error.reason}") from error
        except urllib.error.URLError as error:
            reason = (
                f"timed out after {timeout:g} s" if isinstance(error.reason, TimeoutError) else error.reason
            )
            raise DownloadError(f"cannot download {url}: {reason}") from error
        except TimeoutError as error:
            raise DownloadError(f"cannot download {url}: timed out after {timeout:g} s") from error
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(f"cannot download {url}: {error}") from error

        with response:
            append = False
            if response.status == 206:
                start, _ = _content_range(response.headers.get("Content-Range"))
                if start is not None and start != offset:
                    part.unlink(missing_ok=True)  # the server answered another range than we asked
                    offset = 0
                    continue
                append = offset > 0
            else:
                offset = 0  # a full reply: start from zero
            length_header = response.headers.get("Content-Length")
            expected = int(length_header) if length_header and length_header.isdigit() else None
            total = offset + expected if expected is not None else None
            try:
                with _progress_bar(show, total, offset, part.stem) as bar:
                    received = _copy_stream(response, part, append, chunk_size, bar)
            except TimeoutError as error:
                raise DownloadError(
                    f"cannot download {url}: timed out after {timeout:g} s; the partial file {part} "
                    "is kept and the next call resumes it"
                ) from error
            except (OSError, http.client.HTTPException) as error:
                raise DownloadError(
                    f"cannot download {url}: transfer interrupted ({error}); the partial file {part} "
                    "is kept and the next call resumes it"
                ) from error
            if expected is not None and received < expected:
                raise DownloadError(
                    f"cannot download {url}: truncated transfer, received {received} of {expected} bytes; "
                    f"the partial file {part} is kept and the next call resumes it"
                )
            return
    raise DownloadError(f"cannot download {url}: the server keeps answering a different byte range")


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    resume: bool = True,
    progress: bool | None = None,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` and return the path of the complete, verified file.

    ``dest`` is a file path or an existing directory (the file is then named after the URL). If the
    file is already there and matches ``sha256`` (or no checksum is given) it is returned without any
    network access. Bytes go to ``<dest>.part``, which is renamed onto ``dest`` only after the
    checksum matched; a mismatch deletes the ``.part`` and raises :class:`ChecksumError`. With
    ``resume`` an existing ``.part`` is continued with an HTTP ``Range`` request. Network errors and
    truncated transfers raise :class:`DownloadError` and keep the ``.part``; HTTP 4xx removes it.
    ``progress=None`` shows a bar only when stderr is a terminal.
    """
    scheme = _check_url(url)
    expected = _normalise_sha256(sha256)
    target = Path(dest).expanduser()
    if target.is_dir():
        name = _url_basename(url)
        if not name:
            raise DownloadError(f"cannot download {url} into the directory {target}: the URL names no file")
        target = target / name
    if target.is_file() and (expected is None or sha256sum(target) == expected):
        return target
    if target.is_dir():
        raise DownloadError(f"cannot download {url} to {target}: a directory is in the way")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    show = _show_progress(progress)

    # A leftover .part may belong to an older version of the file: if a resumed transfer fails the
    # checksum, try once more from scratch before blaming the remote file.
    attempts = 2 if resume and part.exists() and expected is not None else 1
    for attempt in range(attempts):
        if scheme == "file":
            _fetch_file_url(url, part, resume and attempt == 0, show, chunk_size)
        else:
            _fetch_http_url(url, part, resume and attempt == 0, show, timeout, chunk_size)
        if expected is not None:
            actual = sha256sum(part)
            if actual != expected:
                part.unlink(missing_ok=True)
                if attempt + 1 < attempts:
                    continue
                raise ChecksumError(
                    f"checksum mismatch for {url} (destination {target}): expected sha256 {expected}, "
                    f"got {actual}; the downloaded bytes were removed"
                )
        os.replace(part, target)
        _fsync_dir(target.parent)
        return target
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class RemoteFile:
    """A file published at ``url`` with its sha256; ``filename`` defaults to the URL's basename."""

    url: str
    sha256: str | None
    filename: str | None = None

    def __post_init__(self) -> None:
        if self.filename is None:
            name = _url_basename(self.url)
            if not name:
                raise DataError(f"cannot name the file of {self.url}: give RemoteFile a filename")
            object.__setattr__(self, "filename", name)


def fetch(remote: RemoteFile, directory: str | os.PathLike[str], **download_kwargs: Any) -> Path:
    """Download ``remote`` into ``directory/remote.filename`` (see :func:`download`)."""
    assert remote.filename is not None  # set by RemoteFile.__post_init__
    return download(remote.url, Path(directory) / remote.filename, remote.sha256, **download_kwargs)


# --------------------------------------------------------------------------- archives


def _archive_format(archive: Path) -> str:
    name = archive.name.lower()
    for suffix, kind in _ARCHIVE_FORMATS:
        if name.endswith(suffix) and len(name) > len(suffix):
            return kind
    raise DataError(
        f"unknown archive format: {archive}; expected one of the suffixes "
        + ", ".join(SUPPORTED_ARCHIVE_SUFFIXES)
    )


def _unsafe_member_path(name: str) -> bool:
    """True if an archive member name is absolute or climbs out of the extraction directory."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        return True
    return ".." in PurePosixPath(normalised).parts


def _check_tar_members(archive: Path, tar: tarfile.TarFile) -> None:
    for member in tar.getmembers():
        if _unsafe_member_path(member.name):
            raise DataError(f"unsafe member {member.name!r} in {archive}: absolute path or '..' component")
        if member.issym() or member.islnk():
            link = member.linkname.replace("\\", "/")
            # Symlinks are relative to the member's directory, hard links to the archive root.
            base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
            resolved: list[str] = []
            escapes = link.startswith("/") or bool(re.match(r"^[A-Za-z]:", link))
            for part in (base / link).parts:
                if part == "..":
                    if not resolved:
                        escapes = True
                        break
                    resolved.pop()
                elif part not in {"", "."}:
                    resolved.append(part)
            if escapes:
                raise DataError(
                    f"unsafe member {member.name!r} in {archive}: link to {member.linkname!r} "
                    "points outside the extraction directory"
                )


def _extract_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        _check_tar_members(archive, tar)
        try:
            tar.extractall(into, filter="data")
        except tarfile.FilterError as error:
            member = error.tarinfo.name if error.tarinfo is not None else "?"
            raise DataError(f"unsafe member {member!r} in {archive}: {error}") from error


def _extract_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            if _unsafe_member_path(member.filename):
                raise DataError(
                    f"unsafe member {member.filename!r} in {archive}: absolute path or '..' component"
                )
        # zipfile writes symlink entries as plain files holding the target, so no link can escape.
        bundle.extractall(into)


def _extract_gz(archive: Path, into: Path) -> None:
    with gzip.open(archive, "rb") as source, open(into / archive.name[: -len(".gz")], "wb") as sink:
        shutil.copyfileobj(source, sink, _HASH_CHUNK)


def _move_into(source: Path, target: Path) -> None:
    """Move ``source`` onto ``target``, merging directories and replacing files."""
    if source.is_dir() and not source.is_symlink() and target.is_dir() and not target.is_symlink():
        for child in source.iterdir():
            _move_into(child, target / child.name)
        source.rmdir()
        return
    if os.path.lexists(target) and target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(source, target)


def extract_archive(
    archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str], *, remove: bool = False
) -> Path:
    """Unpack ``archive`` into ``dest_dir`` (created if needed) and return ``dest_dir``.

    Supports ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz`` and single-file
    ``.gz`` (written to ``dest_dir/<name without .gz>``). Members with absolute paths, ``..``
    components or links pointing outside are refused, and tar archives are extracted with the
    ``"data"`` filter. Extraction happens in a temporary directory next to ``dest_dir``; its content
    is moved into ``dest_dir`` only after everything was unpacked, so a failure leaves nothing partial
    in ``dest_dir``. With ``remove`` the archive is deleted after success.
    """
    source = Path(archive).expanduser()
    if not source.is_file():
        raise DataError(f"archive not found: {source}")
    kind = _archive_format(source)
    destination = Path(dest_dir).expanduser()
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.extract-", dir=destination.parent))
    try:
        try:
            if kind == "tar":
                _extract_tar(source, staging)
            elif kind == "zip":
                _extract_zip(source, staging)
            else:
                _extract_gz(source, staging)
        except DataError:
            raise
        except (
            tarfile.TarError,
            zipfile.BadZipFile,
            EOFError,
            zlib.error,
            gzip.BadGzipFile,
            lzma.LZMAError,
        ) as error:
            raise DataError(f"corrupt archive {source}: {error}") from error
        except (OSError, ValueError, RuntimeError) as error:
            # bz2 reports a bad stream as OSError; zip reports encryption as RuntimeError.
            raise DataError(f"cannot extract {source} (corrupt or unreadable archive): {error}") from error
        destination.mkdir(parents=True, exist_ok=True)
        for entry in staging.iterdir():
            _move_into(entry, destination / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if remove:
        source.unlink(missing_ok=True)
    return destination
