#!/usr/bin/env bash
# The suite's wall time and CPU time, one process against two pytest-xdist workers (issue 31):
#   benchmarks/suite_time.sh [PYTEST_ARGS...]      e.g. benchmarks/suite_time.sh --cov --cov-report=
# Runs the whole suite twice, one way after the other (about half an hour on 2 cores), and
# prints for each: wall seconds, CPU seconds of the whole machine (/proc/stat, so Ray workers
# and CLI subprocesses count) and the load average before and after. Run it on an idle machine:
# every other process's CPU counts too.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
hz=$(getconf CLK_TCK)
logs=$(mktemp -d)  # each run's pytest output
echo "pytest output in $logs"
for workers in 0 2; do
    xdist=()
    [ "$workers" != 0 ] && xdist=(-n "$workers" --dist loadgroup)
    load0=$(cut -d' ' -f1-3 /proc/loadavg); b0=$(busy); t0=$(date +%s.%N)
    "$PY" -m pytest -q -p no:cacheprovider "${xdist[@]}" "$@" > "$logs/workers-$workers.log" 2>&1
    rc=$?
    b1=$(busy); t1=$(date +%s.%N); load1=$(cut -d' ' -f1-3 /proc/loadavg)
    summary=$(tail -1 "$logs/workers-$workers.log")
    python3 -c "w=$t1-$t0; c=($b1-$b0)/$hz; print(f'workers $workers: wall {w:.0f} s, cpu {c:.0f} s ({c/w:.2f} cores), load before $load0, after $load1, exit $rc: $summary')"
done
