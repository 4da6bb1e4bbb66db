"""Issue 19, item 4: a Raspberry Pi powered from a power-switching USB hub, as a lab's exporter publishes it
(labgrid's `NetworkUSBPowerPort`), is power-cycled through labgrid-client as the place's holder
(harness/launchers/netpower.py).

What is real: the coordinator, labgrid's exporter (tests/remote/usb_hub_exporter.py stands in only for the udev
lookup of a hub this machine does not have), `labgrid-client power` with its RemotePlace target and
`USBPowerDriver`, labgrid's SSH connection manager reaching the exporter host (an sshd on loopback known to ssh
as `usbhub-exporter`), and the board (its own sshd). At the process boundary: `uhubctl` on the exporter host is a
script that logs its arguments, switches the board's sshd as the hub port would switch its power, and answers as
uhubctl does. Cases: `bench pool power PLACE off|on` takes the place, switches, gives it back; a place someone else
holds is refused (exit 3, one line); a board killed mid-entry is power-cycled through the hub port and the run
completes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.remote.lab import LABGRID_BIN, SSHD, free_port, keygen, power_cycled_run, wait_port
from tests.remote.test_power import place, pool_cli
from tests.remote.test_remote_run import ENTRY, RUN, bench

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HUB_PATH, HUB_PORT = "1-1.3", 2


class HubHost:
    """The exporter's machine as labgrid's SSH connection manager sees it: `ssh usbhub-exporter` (a wrapper on PATH
    adds this lab's ssh config) reaches an sshd whose sessions find the stand-in `uhubctl` first on PATH."""

    def __init__(self, root: Path, lab, board):
        self.dir = root
        self.log = root / "uhubctl.log"
        key = root / "host_ed25519"
        host_pub = keygen(key)
        (root / "authorized_keys").write_text(lab.client_pub + "\n")
        (root / "home").mkdir()
        fakebin, wrapbin = root / "fakebin", root / "wrapbin"
        fakebin.mkdir()
        wrapbin.mkdir()
        self.port = free_port()
        config = root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {key}", f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "StrictModes no", "UsePAM no", "LogLevel ERROR",
            f"SetEnv HOME={root / 'home'} PATH={fakebin}:/usr/bin:/bin", ""]))
        uhubctl = fakebin / "uhubctl"
        uhubctl.write_text(f"""#!/bin/sh
echo "$*" >> '{self.log}'
action=
while [ $# -gt 0 ]; do [ "$1" = -a ] && action=$2; shift; done
echo "Current status for hub {HUB_PATH} [2109:3431 USB2.0 Hub, USB 2.10, 4 ports, ppps]"
case "$action" in
  off) '{board.power_script}' off || exit 1; echo "Sent power off request"; state="0000 off" ;;
  on) '{board.power_script}' on || exit 1; echo "Sent power on request"; state="0103 power enable connect" ;;
  *) state="0103 power enable connect" ;;
esac
echo "New status for hub {HUB_PATH} [2109:3431 USB2.0 Hub, USB 2.10, 4 ports, ppps]"
echo "  Port {HUB_PORT}: $state"
""")
        uhubctl.chmod(0o755)
        ssh_config = root / "ssh_config"
        ssh_config.write_text("\n".join([
            "Host usbhub-exporter", "  HostName 127.0.0.1", f"  Port {self.port}", f"  User {board.user}",
            f"  IdentityFile {lab.client_key}", "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {root / 'known_hosts'}", "  StrictHostKeyChecking yes", ""]))
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {' '.join(host_pub.split()[:2])}\n")
        ssh = wrapbin / "ssh"
        ssh.write_text(f"#!/bin/sh\nexec /usr/bin/ssh -F '{ssh_config}' \"$@\"\n")
        ssh.chmod(0o755)
        self.wrapbin = wrapbin
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=open(root / "sshd.log", "ab"), start_new_session=True)
        wait_port(self.port)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def usb_lab(lab):
    lab.add("usb-a", tags={"target": "usbhub"})
    return lab


@pytest.fixture(scope="module")
def hub(usb_lab, labgrid, tmp_path_factory):
    """The hub's exporter (labgrid's, on the exporter host `usbhub-exporter`) and the place's match for its port."""
    board = usb_lab.boards["usb-a"]
    host = HubHost(tmp_path_factory.mktemp("hubhost"), usb_lab, board)
    root = tmp_path_factory.mktemp("hubex")
    (root / "exporter.yaml").write_text(
        f"usb-a:\n  USBPowerPort:\n    busnum: 1\n    devnum: 7\n    path: '{HUB_PATH}'\n    vendor_id: 0x2109\n"
        f"    model_id: 0x3431\n    index: {HUB_PORT}\n")
    exporter = subprocess.Popen([sys.executable, str(Path(__file__).with_name("usb_hub_exporter.py")), "-c",
                                 labgrid.address, "-n", "hubex", "--hostname", "usbhub-exporter",
                                 str(root / "exporter.yaml")], cwd=root, stdout=subprocess.DEVNULL,
                                stderr=open(root / "exporter.log", "ab"), start_new_session=True)
    try:
        labgrid.client("-p", "usb-a", "add-match", "hubex/usb-a/NetworkUSBPowerPort")
        deadline = time.monotonic() + 30
        while "NetworkUSBPowerPort" not in place(labgrid.address, "usb-a").exported:
            assert time.monotonic() < deadline, (root / "exporter.log").read_text()[-2000:]
            time.sleep(0.3)
        yield host
    finally:
        exporter.kill()
        exporter.wait()
        host.close()


@pytest.fixture
def on_path(hub, monkeypatch):
    """bench (and the labgrid-client it runs) find the lab's ssh wrapper first, as a lab's ssh config would."""
    import os

    monkeypatch.setenv("PATH", f"{hub.wrapbin}{os.pathsep}{os.environ['PATH']}")
    return hub


def test_pool_power_switches_the_usb_hub_port_through_labgrid_client(usb_lab, labgrid, on_path):
    board, coordinator = usb_lab.boards["usb-a"], labgrid.address
    published = place(coordinator, "usb-a").exported["NetworkUSBPowerPort"]
    assert (published["host"], published["path"], published["index"], published["resource"]) == \
        ("usbhub-exporter", HUB_PATH, HUB_PORT, "USBPowerPort")  # the YAML entry's name
    before = len(on_path.calls())
    try:
        off = pool_cli(coordinator, "power", "usb-a", "off")
        assert off.returncode == 0, off.stderr
        assert off.stdout.startswith("usb-a: power off done in ")
        assert f"(labgrid NetworkUSBPowerPort hub {HUB_PATH} port {HUB_PORT} on usbhub-exporter, through " \
               "labgrid-client)" in off.stdout
        assert board.sshd_pid() is None  # the hub port's power went, and the board with it
        assert on_path.calls()[before:] == [f"-l {HUB_PATH} -p {HUB_PORT} -r 100 -a off"]
        assert place(coordinator, "usb-a").acquired is None  # taken for the switching, given back
        on = pool_cli(coordinator, "power", "usb-a", "on")
        assert on.returncode == 0 and "usb-a: power on done" in on.stdout, on.stderr
        wait_port(board.port)
        assert on_path.calls()[before + 1:] == [f"-l {HUB_PATH} -p {HUB_PORT} -r 100 -a on"]
    finally:
        if board.sshd_pid() is None:
            board.start()


def test_pool_power_refuses_a_usb_hub_port_someone_else_holds(usb_lab, labgrid, on_path):
    coordinator = labgrid.address
    labgrid.client("-p", "usb-a", "acquire")
    try:
        before = len(on_path.calls())
        res = pool_cli(coordinator, "power", "usb-a", "cycle")
        holder = place(coordinator, "usb-a").acquired
        assert res.returncode == 3, res.stderr
        assert res.stderr.strip().splitlines() == [
            f"bench: error: place 'usb-a' is held by {holder}: its USB hub port is switched by labgrid for the place's "
            "holder only (bench pool release --stale frees a dead run's place)"]
        assert on_path.calls()[before:] == []
    finally:
        labgrid.client("-p", "usb-a", "release")


def test_a_killed_board_is_power_cycled_through_the_usb_hub_port(usb_lab, labgrid, on_path, built_packs, tiny_data,
                                                                  tmp_path):
    board = usb_lab.boards["usb-a"]
    before = len(on_path.calls())
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "8", "--pool", "target=usbhub",
                 "--coordinator", labgrid.address, "--inventory", str(usb_lab.inventory), wait=False)
    run_dir, doc, cycle = power_cycled_run(proc, tmp_path, board, ENTRY)
    assert cycle["switch"] == (f"labgrid NetworkUSBPowerPort hub {HUB_PATH} port {HUB_PORT} on usbhub-exporter, "
                               "through labgrid-client")
    # labgrid's USBPowerDriver cycled the port as the run's holder: off, its delay, on
    assert on_path.calls()[before:] == [f"-l {HUB_PATH} -p {HUB_PORT} -r 100 -a off",
                                        f"-l {HUB_PATH} -p {HUB_PORT} -r 100 -a on"]
    assert place(labgrid.address, "usb-a").acquired is None
