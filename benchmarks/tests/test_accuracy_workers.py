"""``accuracy.run_workers`` hands each worker the next pending job when its last one ends: every
job runs once, a long job does not hold back jobs queued behind it, and a worker that dies loses
only the job it held. Workers here are small Python processes speaking the same protocol (a JSON
job a line on standard input, a ``RESULT {json}`` line back), not the benchmark."""

from __future__ import annotations

import sys

from benchmarks.accuracy import run_workers

WORKER = r"""
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    print("progress: other output is skipped", flush=True)
    if job[1] == "die":
        sys.exit(3)
    time.sleep(job[2])
    print("RESULT " + json.dumps({"job": job[0], "pid": os.getpid()}), flush=True)
"""


def test_each_worker_takes_the_next_job_when_its_last_one_ends(capsys):
    # one 1.5 s job and six of 0.05 s on two workers: the long job's worker runs it alone while
    # the other takes every short job (a fixed half each would give the long one's worker three)
    jobs = [["long", "run", 1.5]] + [[f"short{i}", "run", 0.05] for i in range(6)]
    rows = []
    run_workers([sys.executable, "-c", WORKER], 2, jobs, rows.append)
    assert sorted(r["job"] for r in rows) == sorted(j[0] for j in jobs)  # each once
    long_pid = next(r["pid"] for r in rows if r["job"] == "long")
    assert [r["job"] for r in rows if r["pid"] == long_pid] == ["long"]
    assert len({r["pid"] for r in rows}) == 2


def test_a_worker_that_dies_loses_only_its_job(capsys):
    jobs = [["a", "die", 0], ["b", "run", 0.2], ["c", "run", 0.01], ["d", "run", 0.01]]
    rows = []
    run_workers([sys.executable, "-c", WORKER], 2, jobs, rows.append)
    assert sorted(r["job"] for r in rows) == ["b", "c", "d"]
    err = capsys.readouterr().err
    assert 'a worker stopped during ["a", "die", 0]' in err and "workers exited with" in err
