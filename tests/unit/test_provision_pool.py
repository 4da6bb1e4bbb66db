"""The pure parts of `bench device provision --pool` (harness/launchers/provision_pool.py): --boards, which places are
provisioned, the exit code and the lines. The pool itself is tested for real in tests/remote/test_provision_pool.py."""

from __future__ import annotations

import pytest

from harness.errors import EXIT_FAILURE, EXIT_OFFLINE, EXIT_OK, EXIT_UNAVAILABLE, UnavailableError, UsageError
from harness.launchers.pool import OUT_OF_SERVICE, OUT_OF_SERVICE_HOLDER, Place
from harness.launchers.provision_pool import BoardResult, exit_code, parse_boards, select_places, summary


def place(name: str, acquired: str | None = None, comment: str = "", **tags: str) -> Place:
    return Place(name=name, tags=dict(tags), acquired=acquired, comment=comment)


def test_boards_is_a_positive_count_or_all():
    assert parse_boards("all") is None and parse_boards("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(UsageError, match="--boards"):
            parse_boards(bad)


def test_matching_in_service_places_by_name_at_most_n():
    places = [place("c", target="rpi"), place("a", target="rpi"), place("x", target="jetson"),
              place("b", target="rpi", acquired=OUT_OF_SERVICE_HOLDER,
                    comment=f"{OUT_OF_SERVICE} since 2026-01-01T00:00:00Z: 3 consecutive infrastructure failures")]
    chosen, skipped = select_places(places, {"target": "rpi"}, None)
    assert [p.name for p in chosen] == ["a", "c"]  # b is out of service, x another target
    assert [(r.place, r.status, r.exit_code) for r in skipped] == [("b", "out-of-service", EXIT_OK)]
    assert "bench pool return b" in skipped[0].error
    assert [p.name for p in select_places(places, {"target": "rpi"}, 1)[0]] == ["a"]
    assert [p.name for p in select_places(places, {"name": "x"}, None)[0]] == ["x"]
    with pytest.raises(UnavailableError, match="no labgrid place matches target=coral"):
        select_places(places, {"target": "coral"}, None)


def test_exit_code_is_the_worst_board_and_3_when_none_is_ready():
    ok, current = BoardResult("a", "provisioned", EXIT_OK), BoardResult("b", "current", EXIT_OK)
    offline, held = BoardResult("c", "failed", EXIT_OFFLINE, error="x"), BoardResult("d", "held", EXIT_UNAVAILABLE)
    assert exit_code([ok, current]) == EXIT_OK
    assert exit_code([ok, held]) == EXIT_UNAVAILABLE
    assert exit_code([ok, held, offline]) == EXIT_OFFLINE
    assert exit_code([BoardResult("e", "failed", EXIT_FAILURE)]) == EXIT_UNAVAILABLE  # nothing usable
    assert exit_code([BoardResult("f", "out-of-service", EXIT_OK)]) == EXIT_UNAVAILABLE
    assert summary([ok, current, held], {"target": "rpi"}, 12.34) == (
        "pool target=rpi: 2 of 3 places ready (1 provisioned, 1 already current, 1 skipped) in "
        "12.3 s; exit 3")


def test_a_line_names_the_board_and_keeps_what_a_board_sent_on_one_line():
    r = BoardResult("pi-\x1b[31ma", "failed", EXIT_UNAVAILABLE, 1.25, python="3.11.7\nevil", runtime="onnxruntime",
                    extra="device-onnx", error="board pi: unreachable\nsecond line")
    line = r.line()
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("pi-") and ": failed (exit 3), python 3.11.7" in line
    assert "onnxruntime [device-onnx], 1.2 s: board pi: unreachable" in line
    d = r.to_dict()
    assert d["status"] == "failed" and d["exit_code"] == 3 and d["seconds"] == 1.25
