"""`bench pool`'s table lists each place's power meters (the sigrok resources a labgrid exporter publishes for it,
harness/launchers/sigrok_meter.py) as `--json` does: resource name, class and availability; names from the
coordinator printed as text, never markup. tests/remote/test_pool.py lists a real coordinator's places."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from harness.cli import main
from harness.commands.pool import HEADERS, meters_cell, table_rows
from harness.launchers import pool as pool_mod
from harness.launchers.pool import Place

UM25C = {"cls": "NetworkSigrokUSBSerialDevice", "params": {"driver": "rdtech-um", "path": "/dev/ttyUSB0"},
         "avail": True}
PLACES = [
    Place(name="pi5-a", tags={"target": "rpi"}, acquired=None,
          network_service={"address": "10.0.0.5", "username": "pi", "port": 22},
          meters={"um25c": UM25C, "[bold]ina[/bold]": {**UM25C, "cls": "SigrokDevice", "avail": False}}),
    Place(name="pi5-b", tags={"target": "rpi"}, acquired=None,
          network_service={"address": "10.0.0.6", "username": "pi", "port": 22}),
]


class FakePool:
    address = "lab:20408"

    def __init__(self, coordinator):
        pass

    def places(self):
        return PLACES


def test_the_meters_cell_names_each_resource_its_class_and_availability():
    assert meters_cell(PLACES[0].meters) == ("[bold]ina[/bold] (SigrokDevice, UNAVAILABLE); "
                                             "um25c (NetworkSigrokUSBSerialDevice, available)")
    assert meters_cell({}) == meters_cell(None) == ""
    assert meters_cell({"m": "junk"}) == "m (?, availability ?)"  # not the pool's shape: said, not guessed
    rows = table_rows([p.to_dict() for p in PLACES])
    assert [r[HEADERS.index("meters")] for r in rows] == [meters_cell(PLACES[0].meters), ""]
    assert rows[1][HEADERS.index("board (NetworkService)")] == "pi@10.0.0.6:22"


def test_bench_pool_prints_the_meters_in_the_table_as_in_json(monkeypatch, capsys):
    monkeypatch.setattr(pool_mod, "Pool", FakePool)
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["pool", "--coordinator", "lab:20408"]) == 0
    out = capsys.readouterr().out
    assert "meters" in out and "um25c (NetworkSigrokUSBSerialDevice, available)" in out
    assert "[bold]ina[/bold] (SigrokDevice, UNAVAILABLE)" in out  # a name is text, not rich markup
    assert main(["pool", "--coordinator", "lab:20408", "--json"]) == 0
    (a, b) = json.loads(capsys.readouterr().out)
    assert a["meters"] == PLACES[0].meters and b["meters"] == {}


def test_a_labgrid_of_another_series_is_refused_in_one_line(monkeypatch):
    """The pool drives labgrid 26.x's client library (no public Python client API exists): another series, or none,
    is one line saying what to install, before any call reaches labgrid."""
    from harness.errors import UnavailableError

    real = metadata.version

    def installed(version):
        def fake(name):
            if name != "labgrid":
                return real(name)
            if version is None:
                raise metadata.PackageNotFoundError(name)
            return version
        return fake

    monkeypatch.setattr(metadata, "version", installed("26.0.1"))
    assert pool_mod.labgrid_problem() is None
    monkeypatch.setattr(metadata, "version", installed("25.0.2"))
    assert pool_mod.labgrid_problem() == ("labgrid 25.0.2 is installed; bench's pool drives labgrid 26.x's client library "
                                      "(labgrid has no public Python client API): pip install 'labgrid>=26,<27' (the "
                                      "[remote] extra)")
    with pytest.raises(UnavailableError) as exc:
        pool_mod.Pool("127.0.0.1:1").places()
    assert exc.value.message.startswith("labgrid 25.0.2 is installed;")
    monkeypatch.setattr(metadata, "version", installed(None))
    assert pool_mod.labgrid_problem() == "labgrid is not installed: pip install -e '.[remote]'"
