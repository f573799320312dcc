"""The side-by-side harness the A/B benches share: worker processes kept warm, asked for one chunk at a time.

A worker is the bench script itself started with ``--worker``: it prints one JSON line when it is ready, then
one JSON line per ``chunk`` line it reads on stdin, and exits when stdin closes. Keeping each contender in its
own warm process lets them take turns chunk by chunk, so a machine whose speed drifts slows all alike.
"""

from __future__ import annotations

import json
import statistics
import subprocess


class WarmWorker:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str] | None = None):
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._reply()  # the worker's first line: what it found (threads, warm-up, ...)

    def _reply(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.name} worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def chunk(self) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write("chunk\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def memory_summary(results: dict[str, list[dict]]) -> dict:
    """Median page faults per step and the peak resident set of each contender's chunks."""
    return {
        "page_faults_per_step": {
            n: round(statistics.median(r["faults_per_step"] for r in rs)) for n, rs in results.items()
        },
        "peak_rss_mb": {n: round(max(r["peak_rss_mb"] for r in rs)) for n, rs in results.items()},
    }
