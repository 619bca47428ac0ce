"""What the studio needs to be a shared server: a fair line for the one accelerator, a bounded output folder, and
messages that do not reveal the server's file system. No Gradio here, so each piece is testable directly."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger("javis_studio")
MARKER = ".javis-studio"  # marks a folder the studio made, so it may serve and prune what is in it


class Rejected(Exception):
    """A request turned away before it waits (this client has enough in the line, or the line is full)."""


class JobGate:
    """One generation runs at a time (``slots``); the others wait in arrival order.

    A client (its address) may have at most ``per_client`` generations running or waiting, and at most
    ``max_waiting`` wait in all: beyond that a request is rejected at once with a message, so one client cannot
    lock the others out for long. A waiting request leaves the line as soon as its ``cancel`` event is set.
    """

    def __init__(self, per_client: int = 2, max_waiting: int = 20, slots: int = 1):
        if per_client < 1 or max_waiting < 0 or slots < 1:
            raise ValueError("per_client and slots must be at least 1, max_waiting at least 0")
        self.per_client, self.max_waiting, self.slots = per_client, max_waiting, slots
        self._line: list[object] = []
        self._owners: dict[object, str] = {}
        self._cond = threading.Condition()

    def load(self, client: str | None = None) -> int:
        """Requests running or waiting (of ``client`` only, when given)."""
        with self._cond:
            owners = Counter(self._owners.values())
            return owners[client] if client is not None else len(self._line)

    def admit(self, client: str) -> object:
        """A ticket in the line, or Rejected with the reason; pass the ticket to :meth:`turn`."""
        with self._cond:
            mine = sum(owner == client for owner in self._owners.values())
            if mine >= self.per_client:
                raise Rejected(
                    f"You already have {mine} generation{'s' if mine > 1 else ''} running or waiting (at most "
                    f"{self.per_client} per visitor): wait for one to finish, or cancel it."
                )
            if len(self._line) - self.slots >= self.max_waiting:
                raise Rejected(f"The studio is busy ({len(self._line)} generations running or waiting): try again "
                               "in a few minutes.")  # fmt: skip
            ticket = object()
            self._line.append(ticket)
            self._owners[ticket] = client
            return ticket

    @contextmanager
    def turn(self, ticket: object, cancel: threading.Event, on_wait: Callable[[int], None] | None = None,
             cancelled: Callable[[], Exception] = lambda: Rejected("cancelled")) -> Iterator[None]:  # fmt: skip
        """Wait until ``ticket`` may run (``on_wait(ahead)`` whenever the number ahead changes; never when nothing
        is ahead), run the body, then leave the line. ``cancel`` set while waiting raises ``cancelled()``."""
        try:
            with self._cond:
                shown = None
                while (ahead := self._line.index(ticket) - self.slots + 1) > 0:
                    if cancel.is_set():
                        raise cancelled()
                    if ahead != shown and on_wait is not None:
                        on_wait(ahead)
                        shown = ahead
                    self._cond.wait(timeout=0.25)
            yield
        finally:
            with self._cond:
                self._line.remove(ticket)
                self._owners.pop(ticket, None)
                self._cond.notify_all()


class OutputStore:
    """The folder the results go to, bounded in age and size (also across restarts, and for API clients that never
    end a browser session). Only a folder the studio made (it holds :data:`MARKER`) or an empty one is used: the
    studio serves what is in it and deletes what is old."""

    def __init__(self, root: str | Path, max_bytes: int, max_age_s: float):
        self.root = Path(root)
        self.max_bytes, self.max_age_s = max_bytes, max_age_s
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--output-dir {self.root} is a file, not a folder")
        if self.root.is_dir() and any(self.root.iterdir()) and not (self.root / MARKER).exists():
            raise ValueError(
                f"--output-dir {self.root} already holds other files: the studio serves everything in its output "
                "folder and deletes old results there, so give it a new or empty folder"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).touch()
        self._lock = threading.Lock()

    def prune(self, keep: tuple[Path, ...] = ()) -> list[Path]:
        """Delete results older than the age bound, then the oldest until the folder is within the size bound;
        the files in ``keep`` (the result being returned) stay. Returns what was deleted."""
        keep_set = {Path(p).resolve() for p in keep}
        with self._lock:
            files = []
            for path in self.root.rglob("*"):
                if path.is_file() and path.name != MARKER and path.resolve() not in keep_set:
                    stat = path.stat()
                    files.append((stat.st_mtime, stat.st_size, path))
            files.sort()
            total = sum(size for _, size, _ in files) + sum(p.stat().st_size for p in keep_set if p.exists())
            now, deleted = time.time(), []
            for mtime, size, path in files:
                if now - mtime <= self.max_age_s and total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size
                deleted.append(path)
            for folder in sorted((p for p in self.root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                if not any(folder.iterdir()):
                    folder.rmdir()
        if deleted:
            logger.info("output folder: deleted %d old result files", len(deleted))
        return deleted

    def forget(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(/[^\s'\"`/<>]+(?:/[^\s'\"`<>]+)*)")


def without_server_paths(message: str) -> str:
    """``message`` with every absolute path that exists on this machine (its first folder does) shortened to its
    last part: users learn which file, not where the server keeps it. Placeholders such as /path/to/dir stay."""

    def short(match: re.Match) -> str:
        path = match.group(1).rstrip(".,;:)")
        tail = match.group(1)[len(path):]
        first = Path("/" + path.strip("/").split("/")[0])
        return (Path(path).name or path) + tail if first.exists() else match.group(1)

    return _ABSOLUTE_PATH.sub(short, message)
