"""Launchers: how a Job reaches the device that runs it (harness/launchers/base.py has the contract)."""

from harness.launchers.base import Launcher

__all__ = ["Launcher"]
