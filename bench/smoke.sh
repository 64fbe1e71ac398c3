#!/usr/bin/env bash
# Every bench at its smallest size (bench/X.sh --smoke), one after the other: each must
# exit 0 and print each of its figures as a number. Nothing about speed is asserted: this
# keeps the benches running wherever the tests run. Prints each bench's time and the total.
#   bench/smoke.sh [NAME...]      (default: every bench; NAME as in bench/NAME.sh)
# It builds nothing in release and starts no services when scripts/test's are there: the
# benches take the debug builds of the test suites (RUNNER_BIN) and the services whose
# environment is loaded (`eval "$(scripts/services.sh env)"`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
RESULTS=${RESULTS:-$root/bench/results}
mkdir -p "$RESULTS"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(buildkit dashboard ingest pipeline proxy sandbox steps webapp)

# check_figures NAME OUTPUT: every figure line NAME prints is there, with numbers where
# the line has them. {N} is a number, {*} any text; whitespace runs count as one space.
check_figures() {
  python3 - "$1" "$2" <<'PY'
import re, sys
name, output = sys.argv[1], sys.argv[2]
rows = lambda *names: [f"{n} {p} {{N}} {{N}} {{N}} {{N}}" for n in names for p in ("/", "/health")]
FIGURES = {
    "buildkit": [
        "first build (cache mount empty): {N} s",
        "rebuild after a one-line change, cache mount warm: median {N} s, worst {N} s",
        "rebuild after a one-line change, tmpfs in place of the cache mount (baseline): median {N} s",
        "ratio warm / cold: {N}",
        "push-to-live with a warm cache: median {N} s; runner overhead median {N} ms",
    ],
    "dashboard": [
        f"{what} ({{*}} deployments) {{N}} {{N}} {{N}} {{N}} {{N}}" for what in ("healthz", "list", "deep", "job")
    ] + [
        "database: {N} MB at {*} deployments, {N} MB at {*} ({N}x for {N}x the rows; {N} bytes per deployment {*}",
        "page cost {*}: list p99 {N}x, job p99 {N}x (flat is ~1)",
        "targets: list p99 {N} ms (<= 20), job p99 {N} ms (<= 50), SSE line latency p50 {N} ms, p99 {N} ms, max {N} ms over {N} lines (p99 <= 100)",
    ],
    "ingest": [
        "baseline GET /healthz (64 conns): {N} req/s, p50 {N} ms, p99 {N} ms",
        "8 {N} {N} {N} {N} {N} {N}",
        "64 {N} {N} {N} {N} {N} {N}",
        "gitea {N} {N} {N} {N} {N} {N} {N}",
        "gitlab {N} {N} {N} {N} {N} {N} {N}",
        "runner RSS: idle {N} MB, under load {N} MB {*}",
        "durability: 202 answers {N}, delivery rows {N}, queued rows {N}, jobs {N}, distinct job ids {N}",
        "no delivery lost or doubled",
    ],
    "pipeline": [
        "== runner with builder = buildkit",
        "== runner with builder = legacy",
        "baseline (docker CLI build + smoke + push, median): {N} s; its build alone {N} s",
        "build step: median {N} s, worst {N} s; ratio to the CLI's build {N} (target <= 1.2)",
        "push-to-live via the runner: median {N} s, worst {N} s (target <= 10 s); ratio to the CLI baseline {N}",
        "in git / engine / registry: median {N} s",
        "runner overhead (pickup, bookkeeping, logs, between steps): median {N} ms, worst {N} ms {*}",
        "queue pickup: median {N} ms, worst {N} ms {*}",
    ],
    "steps": [
        "docker run --rm of the command (baseline, median): {N} ms",
        "the step through the runner: median {N} ms; ratio {N}; beyond 1.2x the baseline {N} ms (target <= 300 ms)",
        "push-to-live without steps: median {N} s; with one test step: median {N} s; ratio {N}",
    ],
    "proxy": [
        "during {N} deploys + {N} rollbacks, with {N} previews created and removed meanwhile: {N} requests, failed {N} (non-2xx {N}, socket errors {N}) (target 0)",
        "p99 during swaps {N} ms vs with no deploy {N} ms (ratio {N})",
        "requests/s through Caddy {N} vs straight to the container {N} (ratio {N}); during swaps {N}",
    ],
    "sandbox": [
        "deploy plan: sandboxed {N} s, unsandboxed {N} s; ratio {N}",
        "deploy apply: sandboxed {N} s, unsandboxed {N} s; ratio {N}",
        "verify plan (untrusted sandbox, no network) {N} s; ratio to the unsandboxed deploy plan {N}",
    ],
    "webapp": rows("gunicorn-1w", "gunicorn-2w", "bare", "ours") + [
        f"{path}: ours/gunicorn-2w = {{N}}x (target >= 15x); ours/bare = {{N}} (target >= 0.9); p99 ours - bare = {{N}} ms (target <= 1 ms)"
        for path in ("/", "/health")
    ] + [
        "start to healthy: {N} ms (target <= 50 ms)",
        "scratch image: {N} MB (target <= 5 MB)",
    ],
}
NUMBER = r"[+-]?\d+(?:\.\d+)?"
def pattern(figure):
    parts = re.split(r"(\{N\}|\{\*\})", figure)
    return re.compile("".join(NUMBER if p == "{N}" else ".*" if p == "{*}" else re.escape(p) for p in parts))
lines = [" ".join(line.split()) for line in open(output)]
missing = [f for f in FIGURES[name] if not any(pattern(f).fullmatch(line) for line in lines)]
if missing:
    print(f"bench/{name}.sh --smoke did not print these figures (as numbers):", file=sys.stderr)
    for figure in missing:
        print(f"  {figure}", file=sys.stderr)
    sys.exit(1)
PY
}

start=$(date +%s.%N)
for name in "${benches[@]}"; do
  [ -x "bench/$name.sh" ] || { echo "bench/smoke.sh: there is no bench/$name.sh" >&2; exit 2; }
  out="$RESULTS/smoke-$name.out"
  t0=$(date +%s.%N)
  if ! "bench/$name.sh" --smoke >"$out" 2>"$RESULTS/smoke-$name.err"; then
    echo "bench/$name.sh --smoke failed; its last lines:" >&2
    tail -n 30 "$RESULTS/smoke-$name.err" "$out" >&2
    exit 1
  fi
  check_figures "$name" "$out"
  printf 'bench/%s.sh --smoke: figures printed, %.0f s\n' "$name" "$(python3 -c "print($(date +%s.%N) - $t0)")"
done
total=$(python3 -c "print(round($(date +%s.%N) - $start))")
echo "bench/smoke.sh: ${#benches[@]} bench(es) ran at their smallest size in $total s"
