"""Tests of interplay.core.data: downloads against a local HTTP server, archives, atomic writes.

No test touches the network: HTTP tests talk to a server on 127.0.0.1 started by the ``server``
fixture, the rest use ``file://`` URLs and temporary directories.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from interplay.core import data
from interplay.core.data import (
    ENV_VAR,
    RemoteFile,
    atomic_save,
    atomic_write,
    data_root,
    dataset_dir,
    download,
    extract_archive,
    fetch,
    require_file,
    sha256sum,
)
from interplay.core.errors import ChecksumError, DataError, DownloadError

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes, several chunks at chunk_size=4096
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA = "0" * 64
FAST = {"progress": False, "timeout": 5.0, "chunk_size": 4096}


# --------------------------------------------------------------------------- local HTTP server


@dataclass
class ServerState:
    root: Path
    base_url: str = ""
    requests: int = 0
    ranges: list[str | None] = field(default_factory=list)
    fail_status: int | None = None  # answer every request with this status
    ignore_range: bool = False  # answer 200 with the whole file even when a Range is asked
    truncate_at: int | None = None  # send only this many body bytes (once), then close
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


def _make_handler(state: ServerState) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: closing ends the body

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
            pass

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            with state.lock:
                state.requests += 1
                state.ranges.append(range_header)
                truncate_at, state.truncate_at = state.truncate_at, None
            if state.fail_status is not None:
                self.send_error(state.fail_status)
                return
            path = state.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            status, start = 200, 0
            if range_header and not state.ignore_range:
                start = int(range_header.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            chunk = body[start:]
            self.send_response(status)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if truncate_at is not None:
                chunk = chunk[:truncate_at]
            self.wfile.write(chunk)
            self.wfile.flush()
            self.close_connection = True

    return Handler


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("served")  # outside tmp_path, which tests inspect
    (root / "payload.bin").write_bytes(PAYLOAD)
    state = ServerState(root=root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------- download over HTTP


def test_download_with_checksum(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "nested" / "file.bin"  # parents are created
    result = download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("file.bin.part").exists()
    assert server.ranges == [None]


def test_download_into_directory_uses_url_basename(server: ServerState, tmp_path: Path) -> None:
    result = download(server.url("payload.bin"), tmp_path, PAYLOAD_SHA.upper(), **FAST)
    assert result == tmp_path / "payload.bin"
    assert sha256sum(result) == PAYLOAD_SHA


def test_present_file_is_not_downloaded_again(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    download(server.url("payload.bin"), dest, None, **FAST)
    assert server.requests == 1


def test_present_file_with_wrong_checksum_is_replaced(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"stale")
    download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == 1


def test_wrong_checksum_leaves_nothing(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    url = server.url("payload.bin")
    with pytest.raises(ChecksumError) as excinfo:
        download(url, dest, WRONG_SHA, **FAST)
    message = str(excinfo.value)
    assert url in message and str(dest) in message
    assert WRONG_SHA in message and PAYLOAD_SHA in message
    assert _leftovers(tmp_path) == []


def test_resume_sends_range_and_appends(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:1000])
    download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    assert server.ranges == ["bytes=1000-"]
    assert sha256sum(dest) == PAYLOAD_SHA
    assert _leftovers(tmp_path) == ["file.bin"]


def test_resume_without_flag_starts_from_zero(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"garbage")
    download(server.url("payload.bin"), dest, PAYLOAD_SHA, resume=False, **FAST)
    assert server.ranges == [None]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_gets_416_and_is_verified(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts(server: ServerState, tmp_path: Path) -> None:
    server.ignore_range = True
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:1000])
    download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    assert server.ranges == ["bytes=1000-"]
    assert dest.read_bytes() == PAYLOAD  # not the 1000 old bytes + the whole file


def test_stale_part_is_retried_from_scratch(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"x" * 1000)  # not a prefix of the remote file
    download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    assert server.ranges == ["bytes=1000-", None]
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_names_url(server: ServerState, tmp_path: Path, status: int) -> None:
    server.fail_status = status
    url = server.url("payload.bin")
    with pytest.raises(DownloadError) as excinfo:
        download(url, tmp_path / "file.bin", PAYLOAD_SHA, **FAST)
    assert not isinstance(excinfo.value, ChecksumError)
    assert url in str(excinfo.value) and str(status) in str(excinfo.value)
    assert _leftovers(tmp_path) == []


def test_missing_remote_file_is_404(server: ServerState, tmp_path: Path) -> None:
    (tmp_path / "file.bin.part").write_bytes(b"old")
    with pytest.raises(DownloadError, match="404"):
        download(server.url("absent.bin"), tmp_path / "file.bin", **FAST)
    assert _leftovers(tmp_path) == []  # a 4xx removes the part file


def test_server_error_keeps_part_file(server: ServerState, tmp_path: Path) -> None:
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:10])
    server.fail_status = 503
    with pytest.raises(DownloadError, match="503"):
        download(server.url("payload.bin"), tmp_path / "file.bin", **FAST)
    assert _leftovers(tmp_path) == ["file.bin.part"]


def test_connection_refused(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/payload.bin"
    with pytest.raises(DownloadError, match="127.0.0.1"):
        download(url, tmp_path / "file.bin", **FAST)
    assert not (tmp_path / "file.bin").exists()


def test_timeout_keeps_part_file(tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/payload.bin"
        (tmp_path / "file.bin.part").write_bytes(b"abc")
        with pytest.raises(DownloadError, match="timed out"):
            download(url, tmp_path / "file.bin", progress=False, timeout=0.2)
    assert _leftovers(tmp_path) == ["file.bin.part"]


def test_truncated_transfer_keeps_part_then_resumes(server: ServerState, tmp_path: Path) -> None:
    server.truncate_at = 5000
    dest = tmp_path / "file.bin"
    part = tmp_path / "file.bin.part"
    with pytest.raises(DownloadError, match="truncated"):
        download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    assert not dest.exists()
    assert part.read_bytes() == PAYLOAD[:5000]
    download(server.url("payload.bin"), dest, PAYLOAD_SHA, **FAST)
    assert server.ranges == [None, "bytes=5000-"]
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_progress_bar_goes_to_stderr(server: ServerState, tmp_path: Path, capsys) -> None:
    download(server.url("payload.bin"), tmp_path / "f.bin", PAYLOAD_SHA, progress=True, timeout=5.0)
    assert "B" in capsys.readouterr().err


def test_fetch_remote_file(server: ServerState, tmp_path: Path) -> None:
    remote = RemoteFile(server.url("payload.bin"), PAYLOAD_SHA)
    assert remote.filename == "payload.bin"
    assert fetch(remote, tmp_path / "ds", **FAST) == tmp_path / "ds" / "payload.bin"
    renamed = RemoteFile(server.url("payload.bin"), PAYLOAD_SHA, filename="other.bin")
    assert fetch(renamed, tmp_path, **FAST).read_bytes() == PAYLOAD


# --------------------------------------------------------------------------- file:// and bad URLs


def test_file_url_download(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    out = tmp_path / "out"
    out.mkdir()
    result = download(source.as_uri(), out, PAYLOAD_SHA, **FAST)
    assert result == out / "source.bin"
    assert result.read_bytes() == PAYLOAD
    assert _leftovers(out) == ["source.bin"]


def test_file_url_wrong_checksum(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    out = tmp_path / "out"
    with pytest.raises(ChecksumError, match=WRONG_SHA):
        download(source.as_uri(), out / "copy.bin", WRONG_SHA, **FAST)
    assert _leftovers(out) == []


def test_file_url_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="no such file"):
        download((tmp_path / "absent.bin").as_uri(), tmp_path / "copy.bin", **FAST)


@pytest.mark.parametrize("url", ["/tmp/payload.bin", "payload.bin", "ftp://example.org/payload.bin"])
def test_non_url_is_rejected(tmp_path: Path, url: str) -> None:
    with pytest.raises(DownloadError, match="file://"):
        download(url, tmp_path / "copy.bin", **FAST)
    assert _leftovers(tmp_path) == []


def test_malformed_checksum_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="64 hexadecimal"):
        download("file:///nowhere/x.bin", tmp_path / "x.bin", "abc", **FAST)


# --------------------------------------------------------------------------- locations


def test_data_root_from_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "data"))
    assert data_root() == (tmp_path / "data").resolve()
    assert not (tmp_path / "data").exists()  # not created
    assert dataset_dir("criteo") == (tmp_path / "data").resolve() / "criteo"
    assert dataset_dir("criteo", root=tmp_path) == tmp_path / "criteo"


def test_data_root_default(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_root() == (tmp_path / ".cache" / "interplay").resolve()
    assert not (tmp_path / ".cache").exists()


@pytest.mark.parametrize("name", ["", "../escape", "/abs"])
def test_dataset_dir_rejects_bad_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset name"):
        dataset_dir(name, root=tmp_path)


def test_require_file(tmp_path: Path) -> None:
    present = tmp_path / "train.txt"
    present.write_text("x")
    assert require_file(present) == present
    missing = tmp_path / "kg_final.txt"
    with pytest.raises(DataError) as excinfo:
        require_file(missing, "KGAT knowledge graph", hint="run `interplay data kgat` first")
    assert str(excinfo.value).startswith(f"KGAT knowledge graph not found: {missing}")
    assert "interplay data kgat" in str(excinfo.value)
    with pytest.raises(DataError, match="file not found"):
        require_file(tmp_path)  # a directory is not a file


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target, encoding="utf-8") as handle:
        handle.write("hello")
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_text() == "hello"
    with atomic_write(target, "wb") as handle:
        handle.write(b"bytes")
    assert target.read_bytes() == b"bytes"
    assert _leftovers(target.parent) == ["out.txt"]


def test_atomic_write_failure_keeps_previous(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("previous")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "previous"
    assert _leftovers(tmp_path) == ["out.txt"]


def test_atomic_write_keeps_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_write(target) as handle:
        handle.write("new")
    assert target.stat().st_mode & 0o777 == 0o640


def test_atomic_write_rejects_read_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="write mode"), atomic_write(tmp_path / "x", "r"):
        pass


def test_atomic_save(tmp_path: Path) -> None:
    target = tmp_path / "arr.npy"
    seen: list[Path] = []

    def writer(path: Path) -> None:
        seen.append(path)
        assert path.parent == tmp_path and path.suffix == ".npy" and not path.exists()
        path.write_bytes(b"saved")

    assert atomic_save(writer, target) == target
    assert target.read_bytes() == b"saved"

    def failing(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(failing, target)
    assert target.read_bytes() == b"saved"
    assert _leftovers(tmp_path) == ["arr.npy"]


# --------------------------------------------------------------------------- archives

FILES = {"data/train.txt": b"1 2 3\n", "data/test.txt": b"4 5\n", "README": b"readme\n"}


def _check_extracted(dest: Path) -> None:
    for name, content in FILES.items():
        assert (dest / name).read_bytes() == content


def _write_tar(path: Path, mode: str, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, mode) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_extract_zip(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, content in FILES.items():
            bundle.writestr(name, content)
    dest = extract_archive(archive, tmp_path / "out")
    assert dest == tmp_path / "out"
    _check_extracted(dest)
    assert archive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.zip", "out"]  # staging removed


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar.xz", "w:xz")])
def test_extract_tar(tmp_path: Path, suffix: str, mode: str) -> None:
    archive = _write_tar(tmp_path / f"bundle{suffix}", mode, FILES)
    dest = tmp_path / "out"
    (dest / "data").mkdir(parents=True)
    (dest / "keep.txt").write_text("kept")  # existing content is merged with, not wiped
    extract_archive(archive, dest)
    _check_extracted(dest)
    assert (dest / "keep.txt").read_text() == "kept"


def test_extract_single_gz_and_remove(tmp_path: Path) -> None:
    archive = tmp_path / "train.txt.gz"
    archive.write_bytes(gzip.compress(b"a b c\n"))
    dest = extract_archive(archive, tmp_path / "out", remove=True)
    assert (dest / "train.txt").read_bytes() == b"a b c\n"
    assert not archive.exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/interplay-evil.txt", "data/../../evil.txt"])
def test_extract_rejects_path_traversal(tmp_path: Path, member: str) -> None:
    archive = _write_tar(tmp_path / "evil.tar", "w", {"ok.txt": b"ok", member: b"evil"})
    dest = tmp_path / "nest" / "out"
    with pytest.raises(DataError, match="evil.txt"):
        extract_archive(archive, dest)
    assert not dest.exists()
    assert _leftovers(tmp_path / "nest") == []
    assert not (tmp_path / "evil.txt").exists()
    assert archive.exists()


def test_extract_rejects_zip_traversal(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ok.txt", b"ok")
        bundle.writestr("../evil.txt", b"evil")
    with pytest.raises(DataError, match=r"\.\./evil\.txt"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_extract_rejects_link_outside(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("data/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="data/passwd"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_unknown_suffix(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.rar"
    archive.write_bytes(b"not an archive")
    with pytest.raises(DataError) as excinfo:
        extract_archive(archive, tmp_path / "out")
    message = str(excinfo.value)
    assert str(archive) in message
    assert all(suffix in message for suffix in data.SUPPORTED_ARCHIVE_SUFFIXES)


def test_extract_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="archive not found"):
        extract_archive(tmp_path / "absent.zip", tmp_path / "out")
    corrupt = tmp_path / "broken.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="broken.tar.gz"):
        extract_archive(corrupt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tar.gz"]
