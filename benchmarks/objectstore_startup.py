"""Start and stop the local SeaweedFS store N times; print the median and max seconds of each.

    python benchmarks/objectstore_startup.py [--runs 5]

``start`` returns once the S3 port answers and the default bucket exists; ``stop`` once the
process is gone. Prints the machine's load average with the figures (a shared machine skews them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pipelines import seaweedfs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    starts, stops = [], []
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        for run in range(args.runs):
            data_dir = Path(tmp) / f"s{run}"
            began = time.perf_counter()
            seaweedfs.start(data_dir, seaweedfs.free_port())
            starts.append(time.perf_counter() - began)
            began = time.perf_counter()
            seaweedfs.stop(data_dir)
            stops.append(time.perf_counter() - began)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, values in (("start", starts), ("stop", stops)):
        print(
            f"{name}: median {statistics.median(values):.2f} s, max {max(values):.2f} s "
            f"over {len(values)} runs"
        )


if __name__ == "__main__":
    main()
