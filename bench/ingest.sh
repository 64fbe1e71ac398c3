#!/usr/bin/env bash
# Webhook ingest throughput and durability: signed ~8 KB push deliveries, each with a
# unique delivery id, driven by wrk at 8 and 64 connections against a release runner, then
# at 64 connections on each other forge's route: Gitea's (bare-hex HMAC-SHA256 in
# X-Gitea-Signature) and GitLab's (the secret itself in X-Gitlab-Token), each with its own
# project and its own forge's push body.
# Baseline from the same run: GET /healthz of the same server (no body, no database write).
# Afterwards it checks durability: rows in the database == 202 answers, one job each.
#   bench/ingest.sh [--smoke] [DURATION_SECS [BACKEND [REPLICAS]]]   (default 10 sqlite 1; --smoke: 1 s)
# BACKEND postgres: REPLICAS runners share one PostgreSQL database (the one
# RUNNER_TEST_POSTGRES names, else a server of the bench's own, stopped at its end); the
# connections are split evenly over the replicas, one wrk each, and their rates added up.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
DURATION=${1:-$(smoke_or 1 10)}
BACKEND=${2:-sqlite}
REPLICAS=${3:-1}
apt_need wrk curl

work=$(mktemp -d)
pid=""
hang_pid=""
cleanup() {
  for p in $pid $hang_pid; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  rm -rf "$work"; own_services_stop
}
trap cleanup EXIT

case "$BACKEND" in
  sqlite) [ "$REPLICAS" = 1 ] || { echo "bench/ingest.sh: SQLite is for one runner process" >&2; exit 2; } ;;
  postgres) [ -n "${RUNNER_TEST_POSTGRES:-}" ] || own_services >&2 ;;
  *) echo "bench/ingest.sh: BACKEND is sqlite or postgres" >&2; exit 2 ;;
esac

# BENCH_PROFILE=dist measures the shipped images' fat-LTO build.
RUNNER=$(runner_binary "${BENCH_PROFILE:-release}")

# The workers hold their jobs as a real build would (checkout from a remote that never
# answers), so the run measures ingest beside busy workers rather than workers churning
# through thousands of jobs that fail in milliseconds.
hang_port=$(free_port)
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64); held = []
while True:
    held.append(s.accept()[0])
' "$hang_port" &
hang_pid=$!

secret="bench-secret-$RANDOM$RANDOM"
# GitLab sends its secret in clear: its project has one of its own.
gitlab_secret="bench-gitlab-secret-$RANDOM$RANDOM"
if [ "$BACKEND" = postgres ]; then
  db_name="bench_ingest_$$"
  psql -X -q "$RUNNER_TEST_POSTGRES" -c "CREATE DATABASE $db_name" >&2
  database_url="${RUNNER_TEST_POSTGRES%/*}/$db_name"
else
  database_url="sqlite://$work/runner.db"
fi
ports=()
pids=()
for replica in $(seq 1 "$REPLICAS"); do
  port=$(free_port)
  ports+=("$port")
  cat >"$work/runner-$replica.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
database_url = "$database_url"
work_dir = "$work/work-$replica"
[queue]
workers = 2
TOML
  # The same project on GitHub, on a Gitea and on a GitLab server (nothing is reported:
  # no token).
  for forge in github gitea gitlab; do
    case $forge in
      github) name=hello repository="Codertocat/Hello-World" secret_env=BENCH_SECRET image=ingest-bench ;;
      gitea) name=hello-gitea repository="gitea/webhooks" secret_env=BENCH_SECRET image=ingest-bench-gitea ;;
      gitlab) name=hello-gitlab repository="mike/diaspora" secret_env=BENCH_GITLAB_SECRET image=ingest-bench-gitlab ;;
    esac
    cat >>"$work/runner-$replica.toml" <<TOML
[[projects]]
name = "$name"
repository = "$repository"
forge = "$forge"
deploy_branches = ["master", "develop"]
webhook_secret_env = "$secret_env"
clone_url = "http://127.0.0.1:$hang_port/repo.git"
[projects.build]
image = "$image"
[projects.smoke]
container_port = 5001
[projects.registry]
url = "127.0.0.1:1"
[projects.rollout]
target = "local"
host_port = $(free_port)
slot_ports = [$(free_port), $(free_port)]
TOML
  done
  cat >>"$work/runner-$replica.toml" <<TOML
[forges.gitea]
url = "http://127.0.0.1:1"
[forges.gitlab]
url = "http://127.0.0.1:1"
TOML
  BENCH_SECRET=$secret BENCH_GITLAB_SECRET=$gitlab_secret RUST_LOG=${BENCH_RUST_LOG:-warn} "$RUNNER" serve --config "$work/runner-$replica.toml" >"$RESULTS/ingest-runner-$replica.log" 2>&1 &
  pids+=("$!")
  wait_http "http://127.0.0.1:$port/healthz"
done
pid="${pids[*]}"
cp runner/tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json "$work/push.json"
# Gitea's and GitLab's push bodies, padded to the GitHub body's size (a field the runner
# does not read): the routes then differ only in their format and their proof.
for forge in gitea gitlab; do
  python3 - "runner/tests/fixtures/$forge-webhooks/push.json" "$work/push.json" "$work/push-$forge.json" <<'PY'
import json, os, sys
body = json.load(open(sys.argv[1]))
body["bench_padding"] = ""
short = os.path.getsize(sys.argv[2]) - len(json.dumps(body))
body["bench_padding"] = "x" * max(short, 0)
open(sys.argv[3], "w").write(json.dumps(body))
PY
done
# bench/ingest.lua signs a body of its own for each request with the secret; it checks
# its HMAC against this signature of the body as written first.
export BENCH_BODY="$work/push.json" BENCH_SECRET=$secret
export BENCH_SIGNATURE=$(python3 -c 'import hmac,hashlib,sys; print("sha256="+hmac.new(sys.argv[1].encode(), open(sys.argv[2],"rb").read(), hashlib.sha256).hexdigest())' "$secret" "$BENCH_BODY")
sleep 1
idle_rss=$(rss_mb "${pids[0]}")

# wrk_all OUT CONNS [wrk args...]: one wrk per replica with CONNS split over them; OUT
# gets their outputs, and the summed rate, the worst p50/p99 and the summed counts.
wrk_all() {
  local out=$1 conns=$2; shift 2
  local each=$(( (conns + REPLICAS - 1) / REPLICAS )) i=0 wrks=() threads=$(( REPLICAS == 1 ? 2 : 1 ))
  rm -f "$out" "$out".*
  for port in "${ports[@]}"; do
    i=$((i + 1))
    BENCH_PREFIX="${BENCH_PREFIX:-h}-$i" wrk -t"$threads" -c"$each" -d"${DURATION}s" --latency "$@" "http://127.0.0.1:$port${WRK_PATH:-}" >"$out.$i" &
    wrks+=("$!")
  done
  for w in "${wrks[@]}"; do wait "$w"; done
  cat "$out".* >"$out"
  python3 - "$out" "$REPLICAS" <<'PY' >"$out.sum"
import subprocess, sys
rows = [subprocess.run(["bash", "-c", f'source bench/lib.sh; wrk_summary "{sys.argv[1]}.{i}"'], capture_output=True, text=True).stdout.split()
        for i in range(1, int(sys.argv[2]) + 1)]
rps = sum(float(r[0]) for r in rows); p50 = max(float(r[1]) for r in rows); p99 = max(float(r[2]) for r in rows)
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {sum(int(r[3]) for r in rows)} {sum(int(r[4]) for r in rows)}")
PY
}

WRK_PATH=/healthz wrk_all "$RESULTS/ingest-healthz.txt" 64
read -r base_rps base_p50 base_p99 _ _ <"$RESULTS/ingest-healthz.txt.sum"

total_accepted=0
declare -A LINE
peak_rss=0
for conns in 8 64; do
  out="$RESULTS/ingest-c$conns.txt"
  BENCH_PREFIX="c$conns-$$" wrk_all "$out" "$conns" -s bench/ingest.lua &
  wrk_pid=$!
  sleep $((DURATION / 2))
  rss=$(rss_mb "${pids[0]}"); peak_rss=$(python3 -c "print(max($peak_rss, $rss))")
  wait "$wrk_pid"
  read -r rps p50 p99 non2xx requests <"$out.sum"
  accepted=$(awk '/accepted_202:/ {n += $2} END {print n + 0}' "$out")
  total_accepted=$((total_accepted + accepted))
  LINE[$conns]="$rps $p50 $p99 $non2xx $accepted"
  # Deliveries answered as duplicates or refused would measure something else.
  [ "$accepted" -gt 0 ] || { echo "no delivery at $conns connections was queued (202): see $out" >&2; exit 1; }
done
# The other forges' routes, at 64 connections, each with its own forge's body.
for forge in gitea gitlab; do
  out="$RESULTS/ingest-$forge.txt"
  forge_secret=$secret
  [ "$forge" = gitlab ] && forge_secret=$gitlab_secret
  signature=$(python3 -c 'import hmac,hashlib,sys; print("sha256="+hmac.new(sys.argv[1].encode(), open(sys.argv[2],"rb").read(), hashlib.sha256).hexdigest())' "$forge_secret" "$work/push-$forge.json")
  BENCH_FORGE=$forge BENCH_BODY="$work/push-$forge.json" BENCH_SECRET=$forge_secret BENCH_SIGNATURE=$signature \
    BENCH_PREFIX="$forge-$$" wrk_all "$out" 64 -s bench/ingest.lua
  read -r rps p50 p99 non2xx requests <"$out.sum"
  accepted=$(awk '/accepted_202:/ {n += $2} END {print n + 0}' "$out")
  total_accepted=$((total_accepted + accepted))
  LINE[$forge]="$rps $p50 $p99 $non2xx $accepted"
  [ "$accepted" -gt 0 ] || { echo "no delivery on the $forge route was queued (202): see $out" >&2; exit 1; }
done
sleep 1
for p in "${pids[@]}"; do kill -KILL "$p"; wait "$p" 2>/dev/null || true; done; pid=""

if [ "$BACKEND" = postgres ]; then
  read -r rows jobs distinct queued_rows <<<"$(psql -X -At -F ' ' "$database_url" -c "SELECT
    (SELECT count(*) FROM deliveries), (SELECT count(*) FROM jobs),
    (SELECT count(DISTINCT job_id) FROM deliveries WHERE job_id IS NOT NULL),
    (SELECT count(*) FROM deliveries WHERE outcome = 'queued')")"
  psql -X -q "$RUNNER_TEST_POSTGRES" -c "DROP DATABASE $db_name" >&2 || true
else
read -r rows jobs distinct queued_rows <<<"$(python3 - "$work/runner.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("select count(*) from deliveries").fetchone()[0]
jobs = db.execute("select count(*) from jobs").fetchone()[0]
distinct = db.execute("select count(distinct job_id) from deliveries where job_id is not null").fetchone()[0]
queued = db.execute("select count(*) from deliveries where outcome = 'queued'").fetchone()[0]
print(rows, jobs, distinct, queued)
PY
)"
fi

echo
echo "backend $BACKEND, $REPLICAS replica(s)"
echo "baseline GET /healthz (64 conns): ${base_rps} req/s, p50 ${base_p50} ms, p99 ${base_p99} ms"
printf "%-6s %12s %9s %9s %8s %10s %10s\n" conns "deliveries/s" "p50 ms" "p99 ms" non2xx "202s" "vs healthz"
for conns in 8 64; do
  read -r rps p50 p99 non2xx accepted <<<"${LINE[$conns]}"
  ratio=$(python3 -c "print(f'{$rps/$base_rps:.2f}')")
  printf "%-6s %12s %9s %9s %8s %10s %10s\n" "$conns" "$rps" "$p50" "$p99" "$non2xx" "$accepted" "$ratio"
done
read -r github_rps _ <<<"${LINE[64]}"
echo "per forge route at 64 conns, bodies of $(wc -c <"$work/push.json") bytes each (vs healthz, vs GitHub's route):"
for forge in gitea gitlab; do
  read -r rps p50 p99 non2xx accepted <<<"${LINE[$forge]}"
  printf "%-6s %12s %9s %9s %8s %10s %10s %8s\n" "$forge" "$rps" "$p50" "$p99" "$non2xx" "$accepted" \
    "$(python3 -c "print(f'{$rps/$base_rps:.2f}')")" "$(python3 -c "print(f'{$rps/$github_rps:.2f}')")"
done
echo "runner RSS: idle ${idle_rss} MB, under load ${peak_rss} MB (targets <= 30 / <= 100 MB)"
echo "durability: 202 answers ${total_accepted}, delivery rows ${rows}, queued rows ${queued_rows}, jobs ${jobs}, distinct job ids ${distinct}"
# wrk stops mid-flight: a request committed just as wrk closed its socket has a row but no
# counted answer, so rows may exceed answers by at most the open connections of the four
# runs (8 + 64 on GitHub's route, 64 on Gitea's, 64 on GitLab's).
if [ "$rows" -lt "$total_accepted" ]; then echo "LOST: fewer rows than 202 answers" >&2; exit 1; fi
if [ $((rows - total_accepted)) -gt $((200 + 2 * REPLICAS)) ]; then echo "rows exceed answers by more than the in-flight requests" >&2; exit 1; fi
if [ "$jobs" -ne "$queued_rows" ] || [ "$distinct" -ne "$queued_rows" ]; then echo "DOUBLED or missing jobs" >&2; exit 1; fi
echo "no delivery lost or doubled"
