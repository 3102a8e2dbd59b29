"""Per task: the authors' final adapt accuracy (adapt_results.csv) and task inference (the indices they print)."""

import csv
import re
import sys
from pathlib import Path

log, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
lines = log.read_text().splitlines()
final = max(i for i, line in enumerate(lines) if line.startswith("Task MNISTPerm"))
inferred: dict[int, list[int]] = {}
task = None
for line in lines[final:]:
    if m := re.match(r"Testing (\d+):", line):
        task = int(m.group(1))
        inferred[task] = []
    elif task is not None and (m := re.fullmatch(r"tensor\(\[*(\d+)\]*\)", line.strip())):
        inferred[task].append(int(m.group(1)))
rows = list(csv.reader((run_dir / "adapt_results.csv").open()))[1:]
adapt = [float(r[-1]) for r in rows]
ti = [sum(i == t for i in v) / len(v) for t, v in sorted(inferred.items())]
print("adapt", [round(a, 3) for a in adapt], "mean", round(sum(adapt) / len(adapt), 4))
print("task inference", [round(x, 2) for x in ti], "mean", round(sum(ti) / len(ti), 3) if ti else None)
