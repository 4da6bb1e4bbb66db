"""A power meter published by a labgrid exporter as a sigrok resource (harness/launchers/sigrok_meter.py): the
resource looked up on the place and refused when missing, unavailable or malformed, sigrok-cli's command built as
labgrid's SigrokCommon builds it, its analog output parsed strictly, the inventory keys, and Debian's real
sigrok-cli streaming sigrok's `demo` driver (a 2 W / 3 W square wave: a known mean of 2.5 W).
tests/remote/test_host_meter.py reads the same meter through the loopback lab's labgrid exporter end to end."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from harness.errors import InputError, IntegrityError, UnavailableError
from harness.launchers import host_meter, sigrok_meter
from harness.launchers.sigrok_meter import SigrokSampler, SigrokSource, parse_line, resolve
from harness.trackers.meter import TOTAL_FIELD

# sigrok's demo driver, channel A0 set to read power: a square wave between offset - amplitude and offset + amplitude,
# 5 samples each (a period of 10 samples at any samplerate), 200 samples a second.
DEMO = {"driver": "demo", "channels": "A0"}
DEMO_CONFIG = ("samplerate=200", "channel_group=A0:measured_quantity=power:offset=2.5:amplitude=0.5:pattern=square")
UM25C = {"host": "lab-exporter", "busnum": None, "devnum": None, "path": "/dev/ttyUSB0", "vendor_id": 4292,
         "model_id": 60000, "driver": "rdtech-um", "channels": "P", "channel_group": None,
         "extra": {"proxy": "lab-exporter", "proxy_required": False}}


@pytest.mark.parametrize("line, expected", [
    ("A0: 2.0000 W\n", ("A0", 2000.0)),
    ("P: 0.580000 W", ("P", 580.0)),
    ("P: 580.000 mW", ("P", 580.0)),
    ("Power: 1.5 kW AVG", ("Power", 1.5e6)),
])
def test_analog_lines_give_milliwatts(line, expected):
    assert parse_line(line, "sigrok-cli (demo)") == expected


@pytest.mark.parametrize("line, fragment", [
    ("A0: -10.0000 V DC", "channel 'A0' reads V, not power (W): name the meter's power channel"),
    ("P: -0.5 W", "not a power reading: 'P: -0.5 W' (negative or not a number)"),
    ("P: nan W", "not a power reading"),
    ("FRAME-BEGIN", "unparseable output: 'FRAME-BEGIN'"),
])
def test_anything_but_a_power_reading_is_refused_naming_the_line(line, fragment):
    with pytest.raises(UnavailableError, match=None) as exc:
        parse_line(line, "sigrok-cli (demo)")
    assert fragment in exc.value.message and exc.value.message.startswith("sigrok-cli (demo)")


def _published(**extra):
    return {"NetworkService": {"cls": "NetworkService", "params": {"address": "10.0.0.5"}, "avail": True},
            "um25c": {"cls": "NetworkSigrokUSBSerialDevice", "params": UM25C, "avail": True}, **extra}


def test_the_resource_is_found_by_name_or_class_and_the_command_is_labgrids():
    by_name = resolve("um25c", "pi5-a", _published())
    assert resolve("NetworkSigrokUSBSerialDevice", "pi5-a", _published()) == by_name
    # labgrid SigrokCommon._get_sigrok_prefix: -d DRIVER:conn=PATH for a serial device, -C CHANNELS; then ours
    assert by_name.sigrok_args() == ["sigrok-cli", "-d", "rdtech-um:conn=/dev/ttyUSB0", "-C", "P", "--continuous",
                                     "-O", "analog"]
    usb = resolve("meter", "pi5-a", {"meter": {"cls": "NetworkSigrokUSBDevice", "avail": True, "params": dict(
        UM25C, driver="uni-t-ut61c", busnum=3, devnum=7, channels=None, channel_group="P1")}}, ("samplerate=10",))
    assert usb.sigrok_args() == ["sigrok-cli", "-d", "uni-t-ut61c:conn=3.7", "-g", "P1", "--config",
                                 "samplerate=10", "--continuous", "-O", "analog"]
    local = resolve("SigrokDevice", "p", {"m": {"cls": "SigrokDevice", "avail": True, "params": DEMO}}, DEMO_CONFIG)
    assert local.argv() == ["sigrok-cli", "-d", "demo", "-C", "A0", "--config", DEMO_CONFIG[0], "--config",
                            DEMO_CONFIG[1], "--continuous", "-O", "analog"]  # a SigrokDevice: run here
    assert local.describe() == {"source": "labgrid", "place": "p", "resource": "m", "class": "SigrokDevice",
                                "driver": "demo", "channels": "A0"}


@pytest.mark.parametrize("name, published, error, fragment", [
    ("um26", _published(), InputError,
     "labgrid place pi5-a: meter labgrid:um26: the place has no such sigrok resource (it has: um25c "
     "(NetworkSigrokUSBSerialDevice);"),
    ("NetworkSigrokUSBSerialDevice", _published(two={"cls": "NetworkSigrokUSBSerialDevice", "params": UM25C,
                                                     "avail": True}), InputError, "2 resources of that class"),
    ("um25c", _published(um25c={"cls": "NetworkSigrokUSBSerialDevice", "params": UM25C, "avail": False}),
     InputError, "resource um25c is not available at its exporter"),
    ("um25c", _published(um25c={"cls": "NetworkSigrokUSBSerialDevice", "avail": True,
                                "params": dict(UM25C, path="/dev/ttyUSB0; rm -rf /")}),
     IntegrityError, "resource um25c has a malformed path"),
    ("um25c", _published(um25c={"cls": "NetworkSigrokUSBSerialDevice", "avail": True,
                                "params": dict(UM25C, driver="--output-file=/etc/passwd")}),
     IntegrityError, "malformed driver"),
], ids=["missing", "ambiguous", "unavailable", "bad-path", "bad-driver"])
def test_a_missing_unavailable_or_malformed_resource_is_one_line(name, published, error, fragment):
    with pytest.raises(error) as exc:
        resolve(name, "pi5-a", published)
    assert fragment in exc.value.message and "\n" not in exc.value.message
    assert exc.value.exit_code == (4 if error is IntegrityError else 2)


# -- inventory -------------------------------------------------------------------------------------------------
def _inventory(tmp_path, text: str):
    from harness.launchers.remote import load_inventory

    path = tmp_path / "boards.toml"
    path.write_text(text)
    return path, load_inventory(path)


def test_a_labgrid_meter_is_resolved_on_its_place_and_refused_on_a_plain_device(tmp_path):
    from types import SimpleNamespace

    from harness.launchers.remote import board_for_device, board_for_lease

    path, inv = _inventory(tmp_path, '[boards.pi5-a]\naddress = "pi@10.0.0.5"\nmeter = "labgrid:um25c"\n'
                                     'meter_config = ["samplerate=10"]\n')
    lease = SimpleNamespace(place="pi5-a", network_service={"address": "10.0.0.5", "username": "pi", "port": 22},
                            tags={}, meters=_published())
    board = board_for_lease(lease, inv)
    assert board.meter.sigrok.resource == "um25c" and board.meter.config == ("samplerate=10",)
    assert board.describe()["meter"] == {"runs_on": "host", "command": "sigrok-cli", "interval_s": None,
                                         "labgrid": board.meter.sigrok.describe()}
    with pytest.raises(InputError, match="reads a labgrid place's resource: board pi5-a is no labgrid place"):
        board_for_device("pi5-a", inv, path)
    with pytest.raises(InputError, match="no such sigrok resource"):
        board_for_lease(dataclass_like(lease, meters={}), inv)


def dataclass_like(ns, **kw):
    from types import SimpleNamespace

    return SimpleNamespace(**{**vars(ns), **kw})


@pytest.mark.parametrize("text, fragment", [
    ('[boards.a]\naddress = "pi@h"\nmeter = "labgrid:um25c"\nmeter_unit = "W"\n',
     "[a]: meter_unit configure a meter command; a labgrid meter streams at its own rate"),
    ('[boards.a]\naddress = "pi@h"\nmeter = "labgrid:../x"\n', "expected labgrid:NAME"),
    ('[boards.a]\naddress = "pi@h"\nmeter = "labgrid:m"\nmeter_config = "samplerate=10"\n',
     "meter_config must be a list of strings"),
    ('[boards.a]\naddress = "pi@h"\nmeter = "labgrid:m"\nmeter_config = ["-o /tmp/x"]\n',
     "meter_config entry '-o /tmp/x' is not key=value"),
    ('[boards.a]\naddress = "pi@h"\nmeter = "labmeter"\nmeter_config = ["samplerate=10"]\n',
     "meter_config configures a labgrid meter"),
    ('[boards.a]\naddress = "pi@h"\nmeter_config = ["samplerate=10"]\n', "meter_config without meter"),
    ('[defaults]\nmeter_config = ["samplerate=10"]\n', "[defaults]: meter_config belongs to one board"),
])
def test_bad_labgrid_meter_keys_are_one_line_naming_the_file(tmp_path, text, fragment):
    with pytest.raises(InputError) as exc:
        _inventory(tmp_path, text)
    assert str(tmp_path / "boards.toml") in exc.value.message and fragment in exc.value.message


# -- Debian's sigrok-cli and sigrok's demo driver ----------------------------------------------------------------
needs_sigrok = pytest.mark.skipif(shutil.which("sigrok-cli") is None,
                                  reason="sigrok-cli not installed (Debian: apt-get install sigrok-cli; .ci/run does)")


def _demo(config=DEMO_CONFIG, params=DEMO) -> SigrokSampler:
    return SigrokSampler(SigrokSource(place="p", resource="m", cls="SigrokDevice", params=params, config=config))


def _wait(sampler: SigrokSampler, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(sampler.samples) < n and sampler.failed_at is None and time.monotonic() < deadline:
        time.sleep(0.05)


@needs_sigrok
def test_the_demo_meter_streams_its_square_wave():
    sampler = _demo()
    sampler.start(0.5)
    try:
        _wait(sampler, 60)
    finally:
        sampler.stop()
    assert sampler.reason is None and sampler.failed_at is None
    mw = np.array([r[TOTAL_FIELD] for _, r in sampler.samples])
    t = np.array([t for t, _ in sampler.samples])
    assert len(mw) >= 60 and np.all(np.diff(t) >= 0)
    assert set(mw) == {2000.0, 3000.0}
    # runs of 5 samples at 2 W, then 5 at 3 W (where the demo's sample buffer wraps a run may be shorter or longer)
    runs = np.diff(np.flatnonzero(np.diff(mw)))
    assert len(runs) >= 5 and np.median(runs) == 5
    # a read's lines are spread over the time since the previous read: stamps never go back
    assert np.all(np.diff(t) >= 0) and len(np.unique(t)) > len(t) // 2


@needs_sigrok
@pytest.mark.parametrize("config, params, fragment", [
    (("samplerate=200",), DEMO, "channel 'A0' reads V, not power (W)"),      # the demo's default: volts
    (("samplerate=200",), {"driver": "no-such-driver"}, "sigrok-cli (no-such-driver) exited with code"),
], ids=["volts", "unknown-driver"])
def test_a_meter_that_gives_no_power_stops_with_the_reason(config, params, fragment):
    sampler = _demo(config, params)
    sampler.start(0.5)
    try:
        _wait(sampler, 10**9, timeout=30)
    finally:
        sampler.stop()
    assert sampler.failed_at is not None and fragment in sampler.reason
    assert sampler.reason.startswith("stopped while the job ran: ")


def test_a_missing_sigrok_cli_is_unavailable_with_the_fix(monkeypatch):
    monkeypatch.setattr(sigrok_meter, "TOOL", "sigrok-cli-not-installed")
    with pytest.raises(UnavailableError, match=r"cannot run sigrok-cli-not-installed: .*apt-get install sigrok-cli"):
        _demo().start(0.5)


def test_host_meter_takes_a_resolved_labgrid_meter_only():
    spec = host_meter.HostMeterSpec(argv=(), labgrid="m")
    with pytest.raises(ValueError, match="resolved on its place"):
        host_meter.HostMeter(spec)
    spec = spec.on_place("p", {"m": {"cls": "SigrokDevice", "avail": True, "params": DEMO}})
    meter = host_meter.HostMeter(spec)
    assert isinstance(meter.sampler, SigrokSampler) and spec.name == "sigrok-cli"
