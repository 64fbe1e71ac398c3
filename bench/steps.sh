#!/usr/bin/env bash
# What a repository's own step (.runner.yml) costs. Per step: the step's row (container
# created, checkout copied in, started, followed to its end, removed) against `docker run
# --rm` of the same command on the same image, from the same run. Per deploy: push-to-live
# of the webapp with one test step against the same project without it.
#   bench/steps.sh [--smoke] [RUNS]      (default 5, --smoke 1, after one warm-up deploy)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
RUNS=${1:-$(smoke_or 1 5)}
apt_need curl git

pipeline_setup
docker image inspect local/busybox:1 >/dev/null 2>&1 \
  || { echo "bench/steps.sh: the image local/busybox:1 is missing: scripts/services.sh start makes it" >&2; exit 1; }

pipeline_workspace steps
repo="$work/repo"
webapp_repo "$repo" "$webapp_bin"
command='test -x /checkout/webapp'

# Baseline: the docker CLI running the command on the image, the checkout bind-mounted.
median() { python3 -c 'import statistics,sys; print(statistics.median(float(l) for l in sys.stdin))'; }
docker run --rm -v "$repo:/checkout:ro" local/busybox:1 sh -e -c "$command"
cli_times=()
for _ in $(seq 1 "$((RUNS * 3))"); do
  t0=$(date +%s.%N)
  docker run --rm -v "$repo:/checkout:ro" local/busybox:1 sh -e -c "$command"
  cli_times+=("$(python3 -c "print($(date +%s.%N) - $t0)")")
done
cli=$(printf '%s\n' "${cli_times[@]}" | median)

port=$(free_port); app_port=$(free_port); secret="bench-$RANDOM$RANDOM"
webapp_project_toml "$port" "$work/runner.db" "$unique" "$repo" "$registry" "$app_port" >"$work/runner.toml"
BENCH_SECRET=$secret RUST_LOG=warn "$RUNNER" serve --config "$work/runner.toml" >"$RESULTS/steps-runner.log" 2>&1 &
pid=$!
wait_http "http://127.0.0.1:$port/healthz"
fixture=runner/tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json

# The same project, first without a .runner.yml, then with one step.
without=$(python3 bench/pipeline.py "http://127.0.0.1:$port" "$secret" "$repo" "$fixture" "$app_port" "$RUNS")
printf 'steps:\n  - name: test\n    image: local/busybox:1\n    commands: ["%s"]\n' "$command" >"$repo/.runner.yml"
git -C "$repo" add -A && git -C "$repo" -c user.name=b -c user.email=b@x commit -qm "one step"
export BENCH_KEEP_LOG="$RESULTS/steps-last-job.log"
with=$(python3 bench/pipeline.py "http://127.0.0.1:$port" "$secret" "$repo" "$fixture" "$app_port" "$RUNS")

python3 - "$without" "$with" "$cli" <<'PY'
import json, sys
without, with_step, cli = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
step = with_step["steps"]["test"]
print(f"docker run --rm of the command (baseline, median): {cli*1000:.0f} ms")
print(f"the step through the runner: median {step*1000:.0f} ms; ratio {step/cli:.2f}; "
      f"beyond 1.2x the baseline {(step - 1.2*cli)*1000:.0f} ms (target <= 300 ms)")
a, b = without["push_to_live"][0], with_step["push_to_live"][0]
print(f"push-to-live without steps: median {a:.2f} s; with one test step: median {b:.2f} s; ratio {b/a:.2f}")
PY
