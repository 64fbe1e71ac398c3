#!/usr/bin/env bash
# Push-to-live wall time of the webapp through the runner, with a warm build cache, split
# into time spent in git/the engine/the registry and the runner's own overhead.
# Baseline from the same run: the same build, smoke run and push done directly with the
# docker CLI (what the original CI workflow did), with no runner in between. Then an app
# without a SIGTERM handler, with and without an init process (see the end).
#   bench/pipeline.sh [--smoke] [RUNS]      (default 5, --smoke 1, after one warm-up deploy)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
RUNS=${1:-$(smoke_or 1 5)}
apt_need curl git

pipeline_setup

pipeline_workspace bench
cleanup_containers=("$unique-baseline")

repo="$work/repo"
webapp_repo "$repo" "$webapp_bin"

# Baseline: the docker CLI doing build, smoke (run, wait for /health, remove) and push.
# The build alone is timed too: the runner's build step is compared with it.
baseline_times=(); cli_build_times=()
for i in $(seq 1 "$RUNS"); do
  echo "change $i" >>"$repo/CHANGES"
  t0=$(date +%s.%N)
  docker build -q --build-arg "APP_COMMIT=base$i" -t "$unique-base:$i" "$repo" >/dev/null 2>&1
  cli_build_times+=("$(python3 -c "print($(date +%s.%N) - $t0)")")
  docker run -d --name "$unique-baseline" -p 127.0.0.1::5001 "$unique-base:$i" >/dev/null
  port=$(docker port "$unique-baseline" 5001/tcp | head -1 | sed 's/.*://')
  until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do sleep 0.01; done
  docker rm -f "$unique-baseline" >/dev/null
  docker tag "$unique-base:$i" "$registry/$unique-base:$i"
  docker push -q "$registry/$unique-base:$i" >/dev/null
  t1=$(date +%s.%N)
  baseline_times+=("$(python3 -c "print($t1 - $t0)")")
done
median() { python3 -c 'import statistics,sys; print(statistics.median(float(l) for l in sys.stdin))'; }
baseline=$(printf '%s\n' "${baseline_times[@]}" | median)
cli_build=$(printf '%s\n' "${cli_build_times[@]}" | median)

# The runner, once with each builder (a fresh runner and database each time).
for builder in buildkit legacy; do
  port=$(free_port); app_port=$(free_port); secret="bench-$RANDOM$RANDOM"
  BENCH_BUILDER=$builder webapp_project_toml "$port" "$work/runner-$builder.db" "$unique" "$repo" "$registry" "$app_port" >"$work/runner.toml"
  BENCH_SECRET=$secret RUST_LOG=warn "$RUNNER" serve --config "$work/runner.toml" >"$RESULTS/pipeline-runner-$builder.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/healthz"
  export BENCH_KEEP_LOG="$RESULTS/pipeline-last-job-$builder.log"
  summary=$(python3 bench/pipeline.py "http://127.0.0.1:$port" "$secret" "$repo" \
    runner/tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json "$app_port" "$RUNS")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  docker rm -f "runner-$unique-production-a" "runner-$unique-production-b" >/dev/null 2>&1 || true
  python3 - "$summary" "$baseline" "$cli_build" "$builder" <<'PY'
import json, sys
s, baseline, cli_build, builder = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
ptl, ext, over, pick, build = s["push_to_live"], s["external"], s["overhead"], s["pickup"], s["build"]
print()
print(f"== runner with builder = {builder}")
print(f"baseline (docker CLI build + smoke + push, median): {baseline:.2f} s; its build alone {cli_build:.2f} s")
print(f"build step: median {build[0]:.2f} s, worst {build[1]:.2f} s; ratio to the CLI's build {build[0]/cli_build:.2f} (target <= 1.2)")
print(f"push-to-live via the runner: median {ptl[0]:.2f} s, worst {ptl[1]:.2f} s (target <= 10 s); "
      f"ratio to the CLI baseline {ptl[0]/baseline:.2f}")
print(f"  in git / engine / registry: median {ext[0]:.2f} s")
print(f"  runner overhead (pickup, bookkeeping, logs, between steps): median {over[0]*1000:.0f} ms, worst {over[1]*1000:.0f} ms (target <= 500 ms)")
print(f"  queue pickup: median {pick[0]*1000:.0f} ms, worst {pick[1]*1000:.0f} ms (target p99 <= 50 ms)")
PY
done

# An app without a SIGTERM handler (busybox's httpd), its containers with an init process
# (the default) and without one: push to answering through the proxy, the deploys taking
# turns between the slots. Without an init the app ignores SIGTERM as PID 1, and a deploy
# into the second slot waits out the grace period before the traffic moves.
sig_repo="$work/sigterm-repo"
mkdir -p "$sig_repo"
git -C "$sig_repo" init -q --initial-branch=master
printf '%s\n' 'FROM local/busybox:1' 'ARG APP_COMMIT=unknown' \
  'RUN mkdir -p /www && echo healthy > /www/health && printf "{\"commit\":\"%s\"}" "$APP_COMMIT" > /www/version' \
  'EXPOSE 5001' 'CMD ["httpd", "-f", "-p", "5001", "-h", "/www"]' >"$sig_repo/Dockerfile"
git -C "$sig_repo" add -A && git -C "$sig_repo" -c user.name=b -c user.email=b@x commit -qm initial
declare -A answering
for init in true false; do
  port=$(free_port); app_port=$(free_port); secret="bench-$RANDOM$RANDOM"
  { webapp_project_toml "$port" "$work/runner-sigterm-$init.db" "$unique-sig" "$sig_repo" "$registry" "$app_port"
    printf '[projects.containers]\ninit = %s\n' "$init"; } >"$work/runner-sigterm.toml"
  BENCH_SECRET=$secret RUST_LOG=warn "$RUNNER" serve --config "$work/runner-sigterm.toml" >"$RESULTS/pipeline-runner-sigterm-$init.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/healthz"
  summary=$(BENCH_KEEP_LOG="" python3 bench/pipeline.py "http://127.0.0.1:$port" "$secret" "$sig_repo" \
    runner/tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json "$app_port" "$(smoke_or 2 4)")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  docker rm -f "runner-$unique-sig-production-a" "runner-$unique-sig-production-b" >/dev/null 2>&1 || true
  answering[$init]=$(python3 -c 'import json,sys; print("%.2f" % json.loads(sys.argv[1])["push_to_live"][1])' "$summary")
done
curl -fsS -o /dev/null -X DELETE "$RUNNER_TEST_CADDY_ADMIN/config/apps/http/servers/runner-$unique-sig-production" 2>/dev/null || true
echo
echo "== an app without a SIGTERM handler: push to answering through the proxy (worst of the deploys, both slots)"
echo "without an init process: ${answering[false]} s (the grace period is waited out)"
echo "with one (the default):  ${answering[true]} s; ratio $(python3 -c "print(f'{${answering[true]}/${answering[false]}:.2f}')") (target: about a health interval plus the probe beyond the build)"
