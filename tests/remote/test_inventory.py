"""Board selection without a board: addresses, the inventory file, pool filters, holder names."""

from __future__ import annotations

import os

import pytest

from harness.errors import InputError, UsageError
from harness.launchers.pool import holder_alive, holder_name, parse_filters
from harness.launchers.remote import board_for_device, load_inventory
from harness.launchers.ssh import SSH, parse_address


@pytest.mark.parametrize("text, expected", [
    ("pi@10.0.0.5", ("pi", "10.0.0.5", 22)), ("pi@10.0.0.5:2222", ("pi", "10.0.0.5", 2222)),
    ("board.lab", (None, "board.lab", 22)), ("root@[::1]:2200", ("root", "::1", 2200)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


def test_inventory_board_and_defaults(tmp_path):
    inv = tmp_path / "boards.toml"
    inv.write_text('[defaults]\nidentity_file = "/k"\nkeepalive_s = 3\n'
                   '[boards.rpi5-a]\naddress = "pi@10.0.0.21:2022"\npython = "/v/bin/python"\ntags = {target = "rpi"}\n')
    doc = load_inventory(inv)
    b = board_for_device("rpi5-a", doc, inv)
    assert (b.user, b.host, b.port, b.python, b.identity_file, b.keepalive_s, dict(b.tags)) == \
        ("pi", "10.0.0.21", 2022, "/v/bin/python", "/k", 3, {"target": "rpi"})
    adhoc = board_for_device("me@127.0.0.1:2200", doc, inv)
    assert adhoc.identity_file == "/k" and adhoc.python == "python3"
    with pytest.raises(UsageError, match="not a board in the inventory"):
        board_for_device("rpi5-z", doc, inv)


def test_ssh_options_are_keys_only_with_host_key_checking():
    from harness.launchers.ssh import Board

    opts = " ".join(SSH(Board(name="b", host="h", user="u", port=2200)).options())
    for want in ("BatchMode=yes", "PasswordAuthentication=no", "StrictHostKeyChecking=yes", "ConnectTimeout=10",
                 "ServerAliveInterval=5", "ServerAliveCountMax=3", "-p 2200", "-l u"):
        assert want in opts


@pytest.mark.parametrize("body, message", [
    ('[boards.a]\naddress = "x@y"\npassword = "hunter2"\n', "unknown key"),
    ('[boards.a]\naddres = "x@y"\n', "unknown key"),
    ("[boards.a\n", "invalid TOML"),
    ('[hosts.a]\naddress = "x@y"\n', "unknown table"),
])
def test_bad_inventory_is_one_line_naming_the_file(tmp_path, body, message):
    inv = tmp_path / "boards.toml"
    inv.write_text(body)
    with pytest.raises(InputError, match=message) as exc:
        load_inventory(inv)
    assert str(inv) in exc.value.message and "\n" not in exc.value.message


def test_pool_filters():
    assert parse_filters("target=rpi,site=lab2") == {"target": "rpi", "site": "lab2"}
    for bad in ("target", "Target=rpi", ""):
        with pytest.raises(UsageError):
            parse_filters(bad)


def test_holder_name_names_this_process_and_is_alive():
    name = holder_name()
    assert f"+bench-{os.getpid()}-" in name and holder_alive(name) is True
    host, rest = name.split("/", 1)
    dead = f"{host}/{rest.rsplit('-', 1)[0]}-1"  # same pid, another start time: a reused pid is not the holder
    assert holder_alive(dead) is False
    assert holder_alive("otherhost/someone") is None  # not a bench holder of this host: not ours to judge
