"""The README's multi-node section, run as written: two `ray start` nodes on this machine with token
authentication, a driver without `RAY_AUTH_MODE=token` refused in one line that says so, and with it a grid spread
over both nodes, each runs row naming its node.

The test's cluster has a temp folder of its own, and only processes whose command line names that folder are
stopped at the end (`ray stop` would stop every Ray on the machine, a user's paper run included).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
GRID = """
name: two-nodes
experiments:
  - tag: t
    methods: [standard, ewc]
    streams: [{name: synthetic, num_tasks: 2, steps_per_task: 60}]
    scenarios: [GG, GNs]
    backbone: {name: fc, hidden: [16]}
"""


def readme_commands() -> list[str]:
    """The multi-node section's commands, in order."""
    section = (REPO / "README.md").read_text().split("### A Ray cluster of several machines", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_processes_naming(marker: str) -> None:
    """SIGKILL every process whose command line contains ``marker``, and their descendants."""
    table: dict[int, tuple[bytes, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                table[int(entry.name)] = ((entry / "cmdline").read_bytes(), int(stat.rsplit(")", 1)[1].split()[1]))
            except OSError:
                continue
    doomed = {pid for pid, (cmdline, _) in table.items() if marker.encode() in cmdline and pid != os.getpid()}
    while True:
        more = {pid for pid, (_, parent) in table.items() if parent in doomed} - doomed
        if not more:
            break
        doomed |= more
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def cluster() -> Iterator[tuple[dict[str, str], str, Path]]:
    """Head and second node started by the README's commands, one CPU each: (environment with the token, the
    head's address, its temp folder)."""
    head, token, node, _ = readme_commands()
    temp = Path(tempfile.mkdtemp(prefix="hc-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_TOKEN": secrets.token_hex(32), "PYTHONPATH": str(REPO), "RAY_TMPDIR": str(temp)}
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    local = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--temp-dir", str(temp), "--disable-usage-stats"]
    head_args = shlex.split(head.replace("--port 6379", f"--port {port}")) + [
        *local,
        "--include-dashboard",
        "false",
        "--ray-client-server-port",
        str(free_port()),
    ]
    node_args = shlex.split(node.replace("HEAD:6379", address)) + local
    try:
        for args in (head_args, node_args):
            assignments = [a for a in args if re.fullmatch(r"[A-Z_]+=.*", a)]
            command = [a for a in args if a not in assignments]
            started = subprocess.run(
                command,
                env={**env, **dict(a.split("=", 1) for a in assignments)},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert started.returncode == 0, started.stderr[-3000:]
            if args is head_args:  # the README's next step prints the token the head uses
                printed = subprocess.run(shlex.split(token), env=env, capture_output=True, text=True, timeout=60)
                assert printed.stdout.strip() == env["RAY_AUTH_TOKEN"], printed.stderr[-2000:]
        yield env, address, temp
    finally:
        stop_processes_naming(str(temp))
        shutil.rmtree(temp, ignore_errors=True)


def driver(env: dict[str, str], address: str, grid: Path, out: Path, auth: bool) -> subprocess.CompletedProcess:
    command = readme_commands()[3].replace("HEAD:6379", address).replace("--grid paper", f"--grid {grid}")
    command = command.replace("--data-dir DATA", f"--out {out} --cpus-per-cell 1")
    args = shlex.split(command)
    assignments = dict(a.split("=", 1) for a in args if re.fullmatch(r"[A-Z_]+=.*", a)) if auth else {}
    rest = [a for a in args if not re.fullmatch(r"[A-Z_]+=.*", a)]
    assert rest[0] == "harness"
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *rest[1:]],
        env={**env, **assignments},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_readmes_two_node_cluster_runs_a_grid_over_both_nodes(cluster, tmp_path: Path) -> None:  # noqa: ANN001
    env, address, _ = cluster
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    started = time.monotonic()
    refused = driver(env, address, grid, tmp_path / "refused", auth=False)
    assert refused.returncode == 2, refused.stderr[-2000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"harness: error: cannot join the Ray cluster at '{address}'") and "InvalidAuthToken" in line
    assert "RAY_AUTH_MODE=token" in line and time.monotonic() - started < 120
    assert not (tmp_path / "refused" / "runs").exists()

    done = driver(env, address, grid, tmp_path / "out", auth=True)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = pd.read_parquet(tmp_path / "out" / "runs")
    assert len(runs) == 4 and set(runs.status) == {"ok"}
    assert runs.node_id.nunique() == 2, runs[["cell_id", "node_id", "pid"]]  # one CPU a node: both took cells
