"""fetch against a local HTTP server on 127.0.0.1 (threaded) serving copies made in tmp_path.

The handler honours `Range: bytes=N-` like figshare's CDN does, and records what it was asked, so the tests see
a resume ask for exactly the missing bytes. No other address is contacted.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.data.catalog import CatalogEntry, RemoteFile
from harness.data.fetch import download, fetch_dataset
from harness.errors import ChecksumError, InputError, IntegrityError, OfflineError


def shared_data() -> Path:
    return Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


class RangeHandler(SimpleHTTPRequestHandler):
    requests_seen: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.requests_seen.append({"path": self.path, "range": self.headers.get("Range")})
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match[1]) if match else 0
        if start >= len(data) and match:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture()
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 with an OS-chosen port; yields (base_url, www folder, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    RangeHandler.requests_seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, RangeHandler.requests_seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def archive(server) -> tuple[str, Path, str]:
    """A zip of three shared London images in the server folder, like figshare's neutral_front.zip."""
    base, www, _ = server
    src = shared_data() / "london-frl" / "neutral_front"
    with zipfile.ZipFile(www / "neutral_front.zip", "w") as zf:
        for name in ("001_03.jpg", "002_03.jpg", "003_03.jpg"):
            zf.write(src / name, f"neutral_front/{name}")
        zf.writestr("__MACOSX/neutral_front/._001_03.jpg", b"junk")
    digest = hashlib.sha256((www / "neutral_front.zip").read_bytes()).hexdigest()
    return f"{base}/neutral_front.zip", www / "neutral_front.zip", digest


def test_fresh_download_verifies_and_extracts(archive, tmp_path):
    url, served, digest = archive
    entry = CatalogEntry("t", "test", "CC BY 4.0", "-", url, (RemoteFile(url, "neutral_front.zip", digest, True),))
    dest = tmp_path / "dest"
    [got] = fetch_dataset(entry, dest)
    assert got.sha256 == digest and got.resumed_from == 0 and got.pinned
    assert (dest / "neutral_front.zip").read_bytes() == served.read_bytes()
    assert (dest / "neutral_front" / "002_03.jpg").read_bytes() == \
        (shared_data() / "london-frl" / "neutral_front" / "002_03.jpg").read_bytes()
    assert not (dest / "__MACOSX").exists() and not (dest / "neutral_front.zip.part").exists()


def test_partial_download_resumes_with_a_range_request(archive, server, tmp_path):
    url, served, digest = archive
    data = served.read_bytes()
    dest = tmp_path / "dest" / "neutral_front.zip"
    dest.parent.mkdir()
    cut = len(data) // 3
    (dest.parent / "neutral_front.zip.part").write_bytes(data[:cut])
    got = download(url, dest, digest)
    assert got.resumed_from == cut and dest.read_bytes() == data
    assert server[2][-1]["range"] == f"bytes={cut}-"
    # Already there and matching: no request at all.
    before = len(server[2])
    assert download(url, dest, digest).path == dest and len(server[2]) == before


def test_checksum_mismatch_deletes_the_download(archive, tmp_path):
    url, _, digest = archive
    dest = tmp_path / "dest" / "neutral_front.zip"
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match=f"neutral_front.zip: sha256 mismatch: expected {wrong}, actual {digest}"):
        download(url, dest, wrong)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_unpinned_files_need_explicit_consent(archive, tmp_path):
    url, _, digest = archive
    entry = CatalogEntry("t", "test", "CC BY 4.0", "-", url, (RemoteFile(url, "neutral_front.zip", None, False),))
    with pytest.raises(IntegrityError, match="no pinned sha256 for neutral_front.zip; pass --allow-unpinned"):
        fetch_dataset(entry, tmp_path / "dest")
    [got] = fetch_dataset(entry, tmp_path / "dest", allow_unpinned=True)
    assert got.sha256 == digest and not got.pinned


def test_missing_remote_file_is_an_integrity_error(server, tmp_path):
    with pytest.raises(IntegrityError, match="HTTP 404"):
        download(f"{server[0]}/nope.zip", tmp_path / "nope.zip", None)


def test_unreachable_host_is_an_offline_one_liner(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/neutral_front.zip"
    dest = tmp_path / "dest" / "neutral_front.zip"
    with pytest.raises(OfflineError) as info:
        download(url, dest, None, timeout=5)
    assert str(info.value).startswith(f"cannot reach 127.0.0.1: offline? download {url} by hand into {dest.parent}")
    assert info.value.exit_code == 5


def test_zip_members_escaping_the_destination_are_refused(server, tmp_path):
    base, www, _ = server
    with zipfile.ZipFile(www / "evil.zip", "w") as zf:
        zf.writestr("../../escaped.txt", b"x")
    digest = hashlib.sha256((www / "evil.zip").read_bytes()).hexdigest()
    entry = CatalogEntry("t", "t", "-", "-", base, (RemoteFile(f"{base}/evil.zip", "evil.zip", digest, True),))
    with pytest.raises(InputError, match="member '../../escaped.txt' would extract outside"):
        fetch_dataset(entry, tmp_path / "a" / "b")
    assert not (tmp_path / "escaped.txt").exists()


def test_fetch_command_refuses_unpinned_catalog_files_before_any_network(tmp_path):
    from helpers_data import bench_data

    from harness.errors import UnknownIdError

    with pytest.raises(IntegrityError, match="london-frl-original: no pinned sha256 for neutral_front.zip"):
        bench_data("data", "fetch", "london-frl-original", "--dest", str(tmp_path / "d"))
    assert not (tmp_path / "d").exists()
    with pytest.raises(UnknownIdError, match="unknown fetchable dataset 'imagenet'; valid: london-frl-original"):
        bench_data("data", "fetch", "imagenet")
