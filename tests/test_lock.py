"""The one flock helper (index.lock.flock / locked_file) that the store's write lock, its open-file lock, the
keyword index and generate's output all use."""

from __future__ import annotations

import threading
from pathlib import Path

from index.lock import flock, locked_file


def test_flock_excludes_other_opens_and_is_freed_when_the_file_closes(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with open(path, "a+") as a, open(path, "a+") as b:
        assert flock(a, wait=False)
        assert not flock(b, wait=False) and not flock(b, exclusive=False, wait=False)
    with open(path, "a+") as a, open(path, "a+") as b:
        assert flock(a, exclusive=False, wait=False) and flock(b, exclusive=False, wait=False)  # shared: both
        assert not flock(open_c := open(path, "a+"), wait=False)
        open_c.close()
    with open(path, "a+") as a:
        assert flock(a, wait=False)  # the earlier holders closed: free again


def test_locked_file_orders_threads_of_one_process(tmp_path: Path) -> None:
    path = tmp_path / "y.lock"
    inside, order = threading.Event(), []

    def second() -> None:
        inside.wait(timeout=10)
        with locked_file(path):
            order.append("second")

    t = threading.Thread(target=second)
    t.start()
    with locked_file(path):
        inside.set()
        t.join(timeout=0.3)  # it waits for this holder
        order.append("first")
    t.join(timeout=10)
    assert order == ["first", "second"] and path.exists()
