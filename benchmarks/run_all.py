"""Run every benchmark in this folder, one after the other, printing their figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = {"drift_anchors.py", "drift_shifts.py"}
"""Imported by drift_eval.py, not run on their own."""
ARGS = {"drift_eval.py": ["--quick"], "drift_matched.py": ["--quick"]}
"""The full drift evaluation takes over an hour with the anchors, the matched-strictness one about
forty minutes (see their docstrings)."""


def main() -> int:
    failed = 0
    for script in sorted(HERE.glob("*.py")):
        if script.name == "run_all.py" or script.name.startswith("_") or script.name in MODULES:
            continue
        print(f"\n=== {script.name} ===", flush=True)
        command = [sys.executable, str(script), *ARGS.get(script.name, [])]
        failed += subprocess.run(command, check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
