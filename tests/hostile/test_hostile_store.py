"""Issue 17, item 8 (the part that needs no server): a malformed PostgreSQL store URI is one line, exit 2, the
password redacted, never a traceback from the redaction code. The server cases are in tests/store/."""

from __future__ import annotations

import pytest

from conftest import assert_error

from harness.errors import EXIT_USAGE


@pytest.mark.parametrize("uri, fragment", [
    ("postgresql://lab:s3cret@db.example:notaport/runs", "port 'notaport'"),
    ("postgresql://lab:s3cret@db.example:99999/runs", "port '99999'"),
    ("postgresql://lab:s3cret@db.example:0/runs", "port '0'"),
    ("postgresql://lab:s3cret@h1:5432,h2:x/runs", "port 'x'"),
    ("postgresql://lab:s3cret@[::1/runs", "malformed"),
])
@pytest.mark.parametrize("command", [("runs",), ("store", "push", "--all")])
def test_a_malformed_store_uri_is_one_line_exit_2(box, uri, fragment, command):
    if command[0] == "store":
        box.run_dir()  # something to push
    res = box.bench(*command, "--store", uri)
    line = assert_error(res, EXIT_USAGE, fragment, "lab:***@")
    assert "s3cret" not in res.out + res.err, line
