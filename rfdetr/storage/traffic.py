"""Count the bytes moved to and from the object store: with ``$RFDETR_TRANSFER_LOG`` set, each
verified transfer appends ``<direction> <bytes> <uri>`` to that file (a short append is atomic,
so a run's subprocesses share it); :func:`read_log` sums it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TRANSFER_LOG_ENV = "RFDETR_TRANSFER_LOG"


def record(direction: str, nbytes: int, uri: object) -> None:
    """Note that ``nbytes`` of ``uri`` went ``direction`` (``up`` or ``down``)."""
    path = os.environ.get(TRANSFER_LOG_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"{direction} {int(nbytes)} {uri}\n")


@dataclass(frozen=True)
class Traffic:
    """Bytes and objects moved each way."""

    up_bytes: int = 0
    down_bytes: int = 0
    up_objects: int = 0
    down_objects: int = 0


def read_log(path: str | os.PathLike[str]) -> Traffic:
    """Sum a transfer log (a missing file: nothing moved)."""
    file = Path(path)
    if not file.is_file():
        return Traffic()
    sums = {"up": [0, 0], "down": [0, 0]}
    for line in file.read_text(encoding="utf-8").splitlines():
        direction, size, _ = [*line.split(" ", 2), "", ""][:3]
        if direction in sums and size.isdigit():
            sums[direction][0] += int(size)
            sums[direction][1] += 1
    return Traffic(sums["up"][0], sums["down"][0], sums["up"][1], sums["down"][1])
