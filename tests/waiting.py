"""Waiting in tests for a condition, never for a fixed time: a deadline and a failure that says what for."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest


def wait_for(check: Callable[[], object], what: str, timeout: float = 30.0, interval: float = 0.02) -> None:
    """Wait until `check()` is true; fail the test with "timed out waiting for <what>" after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_while_alive(proc: subprocess.Popen, check: Callable[[], object], what: str, timeout: float) -> None:
    """Wait until `check()` is true while `proc` runs; fail if it exits first or after `timeout` seconds."""
    wait_for(lambda: check() or proc.poll() is not None, what, timeout, interval=0.05)
    if not check():
        pytest.fail(f"the child process exited (code {proc.returncode}) before {what}")
