"""`make bench`: run every benchmark in bench/ and print their figures.

Each bench_*.py is a standalone script that sets up what it measures (real agent, daphne, Celery, Redis,
PostgreSQL) and prints a table of figures, targets and ratios against its named baseline.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["bench_agent.py", "bench_recording.py", "bench_proxy.py", "bench_engine.py"]


def main() -> int:
    scripts = [HERE / name for name in ORDER if (HERE / name).exists()]
    scripts += sorted(p for p in HERE.glob("bench_*.py") if p.name not in ORDER)
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"--- {script.name}: exit {code} in {time.monotonic() - started:.1f}s", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
