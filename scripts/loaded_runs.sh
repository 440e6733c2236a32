#!/usr/bin/env bash
# Run the whole pytest suite several times in a row with one core kept busy (issue 12: "run the
# whole suite three times in a row under load and fix what fails").
#
#   scripts/loaded_runs.sh [RUNS] [-- PYTEST_ARGS...]      (make test-loaded)
#
# The load is stress-ng on one core (CPU 0), or a shell busy loop pinned there when stress-ng is
# missing. It is stopped when the script exits, whether the runs pass, fail or are interrupted;
# stress-ng also stops itself after its --timeout. Each run is bounded by `timeout` (RUN_LIMIT
# seconds, default 3600: a run took 25 minutes under load on two cores). Logs go to $LOG_DIR
# (default .loaded-runs/); a summary line per run (pytest's verdict and the wall time) is printed
# at the end. Exit status: 0 if every run passed.
set -u

RUNS=3
if [[ $# -gt 0 && $1 != "--" ]]; then RUNS=$1; shift; fi
if [[ $# -gt 0 && $1 == "--" ]]; then shift; fi
PY=${PY:-.venv/bin/python}
RUN_LIMIT=${RUN_LIMIT:-3600}
LOG_DIR=${LOG_DIR:-.loaded-runs}
mkdir -p "$LOG_DIR"

load_pid=
run_pid=
stop() {  # stop: the process whose pid is in the named variable, if it still runs
    local pid=${!1}
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    printf -v "$1" '%s' ''
}
trap 'stop run_pid; stop load_pid' EXIT
trap 'exit 130' INT TERM

# The load outlives no run: its own limit is every run's limit together, plus a minute.
load_limit=$((RUNS * RUN_LIMIT + 60))
if command -v stress-ng >/dev/null; then
    stress-ng --cpu 1 --taskset 0 --timeout "${load_limit}s" --quiet &
    load_pid=$!
    load="stress-ng --cpu 1 --taskset 0"
else
    timeout "$load_limit" taskset -c 0 bash -c 'while :; do :; done' &
    load_pid=$!
    load="busy loop on CPU 0"
fi
echo "load: $load (pid $load_pid)"

summary=()
status=0
for run in $(seq 1 "$RUNS"); do
    log="$LOG_DIR/run-$run.log"
    start=$(date +%s)
    # In the background and waited for, so that a signal to this script is handled at once.
    CI=true timeout --kill-after=30 "$RUN_LIMIT" "$PY" -m pytest "$@" >"$log" 2>&1 &
    run_pid=$!
    wait "$run_pid"
    rc=$?
    run_pid=
    took=$(($(date +%s) - start))
    verdict=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$log" | tail -1 | tr -d '=')
    [[ $rc -eq 0 ]] || status=1
    summary+=("run $run: exit $rc, ${took}s wall,${verdict:- no verdict (see $log)}")
    echo "${summary[-1]}"
    grep -E '^(FAILED|ERROR) ' "$log" || true
done
stop load_pid
echo "--- $RUNS runs under $load: CI=true $PY -m pytest $*"
printf '%s\n' "${summary[@]}"
exit $status
