#!/usr/bin/env bash
# Dashboard speed on a big history. For 10,000 and 100,000 deployments (with 100,000 and
# 1,000,000 log lines) it measures with wrk: the deployments page (newest, and a page deep
# in the history), a job page with a 1,000-line log, and, as the baseline of the same run,
# GET /healthz. Then, on the big database, it pushes real commits (Docker engine, local
# registry) and measures live-log latency: a line written by the job -> its SSE event received.
#   bench/dashboard.sh [--smoke] [DURATION_SECS] [SSE_DEPLOYS]      (defaults 10 and 5;
#                                   --smoke: 1 and 1, on 100 and 1,000 deployments)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
DURATION=${1:-$(smoke_or 1 10)}
SSE_DEPLOYS=${2:-$(smoke_or 1 5)}
SMALL=$(smoke_or 100 10000)
BIG=$(smoke_or 1000 100000)
apt_need wrk curl git

pipeline_setup

pipeline_workspace dash

repo="$work/repo"
webapp_repo "$repo" "$webapp_bin"
secret="bench-$RANDOM$RANDOM"
app_port=$(free_port)

start_runner() { # size
  port=$(free_port)
  webapp_project_toml "$port" "$work/db-$1/runner.db" "$unique" "$repo" "$registry" "$app_port" >"$work/runner-$1.toml"
  BENCH_SECRET=$secret RUST_LOG=warn "$RUNNER" serve --config "$work/runner-$1.toml" >"$RESULTS/dashboard-runner-$1.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/healthz"
}
stop_runner() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

measure() { # name url -> "rps p50 p99 non2xx"
  wrk -t2 -c8 -d"${DURATION}s" --latency "$2" >"$RESULTS/dashboard-$1.txt"
  read -r rps p50 p99 non2xx _ <<<"$(wrk_summary "$RESULTS/dashboard-$1.txt")"
  echo "$rps $p50 $p99 $non2xx"
}

declare -A R
for size in "$SMALL" "$BIG"; do
  lines=$((size * 10))
  start_runner "$size"; stop_runner   # creates and migrates the database
  t0=$(date +%s.%N)
  big_job=$(python3 bench/dashboard.py seed "$work/db-$size/runner.db" "$unique" "$size" "$lines")
  seeded=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
  bytes=$(stat -c %s "$work/db-$size/runner.db")
  start_runner "$size"
  base="http://127.0.0.1:$port"
  curl -fsS "$base/" | grep -q 'id="deployments"' || { echo "the deployments page did not render" >&2; exit 1; }
  curl -fsS "$base/jobs/$big_job" | grep -q 'data-seq="1000"' || { echo "the job page did not show its log" >&2; exit 1; }
  R[$size,healthz]=$(measure "healthz-$size" "$base/healthz")
  R[$size,list]=$(measure "list-$size" "$base/")
  R[$size,deep]=$(measure "deep-$size" "$base/?before=$((size / 2))&status=replaced")
  R[$size,job]=$(measure "job-$size" "$base/jobs/$big_job")
  R[$size,db]="$bytes $seeded"
  [ "$size" = "$BIG" ] || stop_runner
done

echo "live log latency: $SSE_DEPLOYS real deploys on the $BIG-deployment database..." >&2
sse=$(python3 bench/dashboard.py sse "http://127.0.0.1:$port" "$secret" "$repo" \
  runner/tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json "$SSE_DEPLOYS")
stop_runner

echo
printf "%-34s %10s %9s %9s %7s %12s\n" "page (wrk -c8)" "req/s" "p50 ms" "p99 ms" non2xx "vs healthz"
for size in "$SMALL" "$BIG"; do
  read -r hrps _ _ _ <<<"${R[$size,healthz]}"
  for what in healthz list deep job; do
    read -r rps p50 p99 non2xx <<<"${R[$size,$what]}"
    label="$what ($size deployments)"
    ratio=$(python3 -c "print(f'{$rps/$hrps:.2f}')")
    printf "%-34s %10s %9s %9s %7s %12s\n" "$label" "$rps" "$p50" "$p99" "$non2xx" "$ratio"
  done
done
python3 - "${R[$SMALL,db]}" "${R[$BIG,db]}" "${R[$SMALL,list]}" "${R[$BIG,list]}" "${R[$SMALL,job]}" "${R[$BIG,job]}" "$sse" "$SMALL" "$BIG" <<'PY'
import json, sys
(b10, s10), (b100, s100) = (a.split() for a in sys.argv[1:3])
l10, l100, j10, j100 = (a.split() for a in sys.argv[3:7])
sse = json.loads(sys.argv[7])
small, big = int(sys.argv[8]), int(sys.argv[9])
print(f"database: {int(b10)/1e6:.1f} MB at {small:,} deployments, {int(b100)/1e6:.1f} MB at {big:,} "
      f"({int(b100)/int(b10):.2f}x for {big // small}x the rows; {int(b100)/big:.0f} bytes per deployment with its job, steps and 10 log lines)")
print(f"page cost {big:,} vs {small:,}: list p99 {float(l100[2])/float(l10[2]):.2f}x, job p99 {float(j100[2])/float(j10[2]):.2f}x (flat is ~1)")
print(f"targets: list p99 {l100[2]} ms (<= 20), job p99 {j100[2]} ms (<= 50), "
      f"SSE line latency p50 {sse['p50']:.1f} ms, p99 {sse['p99']:.1f} ms, max {sse['max']:.1f} ms over {sse['lines']} lines (p99 <= 100)")
PY
