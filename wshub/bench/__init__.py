"""``wshub bench``: a load generator for wshub servers (and, through dialects, their peers).

N receivers across channels and M publishers, each group in its own processes, measure
delivered messages per second, delivery ratio, publish-to-deliver latency and, given the
server's pid, the server's CPU per delivery. See ``docs/bench.md``.
"""

from wshub.bench.dialect import WSHUB, Dialect, Step
from wshub.bench.report import Result
from wshub.bench.run import BenchConfig, LoadGenerator, Progress, run_bench

__all__ = [
    "WSHUB",
    "BenchConfig",
    "Dialect",
    "LoadGenerator",
    "Progress",
    "Result",
    "Step",
    "run_bench",
]
