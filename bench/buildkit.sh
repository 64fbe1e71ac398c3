#!/usr/bin/env bash
# What a BuildKit cache mount saves: a dependency stage that writes 200 MB into a cache
# mount (as a package manager fills its download cache), built through the runner once
# cold and then after one-line source changes, which rerun the stage with the cache warm.
# Baseline from the same run: the same stage with a tmpfs mount in place of the cache
# mount (an empty directory each build, so the work is always redone).
#   bench/buildkit.sh [--smoke] [RUNS]      (default 3 warm builds after the cold one;
#                                            --smoke: 1, and 8 MB in place of 200)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
RUNS=${1:-$(smoke_or 1 3)}
DEPS_MB=$(smoke_or 8 200)
apt_need curl git

pipeline_setup

pipeline_workspace benchbk

# run_with NAME MOUNT: a first build then RUNS rebuilds with /deps mounted as MOUNT says;
# prints the summary JSON.
run_with() {
  local repo="$work/repo-$1"
  webapp_repo "$repo" "$webapp_bin"
  cat >"$repo/Dockerfile" <<DOCKERFILE
FROM local/busybox:1 AS deps
COPY CHANGES /CHANGES
RUN --mount=$2,target=/deps \\
    if [ -f /deps/done ]; then echo "dependencies: from the cache mount"; \\
    else dd if=/dev/urandom of=/deps/blob bs=1M count=$DEPS_MB 2>/dev/null && sync && touch /deps/done && echo "dependencies: fetched"; fi \\
 && md5sum /deps/blob > /deps.sum

FROM scratch
ARG APP_COMMIT=unknown
COPY webapp /webapp
COPY --from=deps /deps.sum /deps.sum
ENV PORT=5001 APP_COMMIT=\${APP_COMMIT}
EXPOSE 5001
ENTRYPOINT ["/webapp"]
DOCKERFILE
  echo start >"$repo/CHANGES"
  git -C "$repo" add -A && git -C "$repo" -c user.name=b -c user.email=b@x commit -qm dockerfile
  local port app_port secret
  port=$(free_port); app_port=$(free_port); secret="bench-$RANDOM$RANDOM"
  webapp_project_toml "$port" "$work/runner-$1.db" "$unique" "$repo" "$registry" "$app_port" >"$work/runner.toml"
  BENCH_SECRET=$secret RUST_LOG=warn "$RUNNER" serve --config "$work/runner.toml" >"$RESULTS/buildkit-runner.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/healthz"
  BENCH_KEEP_LOG="$RESULTS/buildkit-last-job.log" python3 bench/pipeline.py "http://127.0.0.1:$port" "$secret" "$repo" \
    runner/tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json "$app_port" "$RUNS"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  docker rm -f "runner-$unique-production-a" "runner-$unique-production-b" >/dev/null 2>&1 || true
}

warm=$(run_with cache "type=cache,id=$unique-deps")
grep -q "dependencies: from the cache mount" "$RESULTS/buildkit-last-job.log" \
  || { echo "the warm build did not find the cache mount filled" >&2; exit 1; }
cold=$(run_with tmpfs "type=tmpfs")
python3 - "$warm" "$cold" <<'PY'
import json, sys
warm, cold = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print()
print(f"first build (cache mount empty): {warm['first_build']:.2f} s")
print(f"rebuild after a one-line change, cache mount warm: median {warm['build'][0]:.2f} s, worst {warm['build'][1]:.2f} s")
print(f"rebuild after a one-line change, tmpfs in place of the cache mount (baseline): median {cold['build'][0]:.2f} s")
print(f"ratio warm / cold: {warm['build'][0] / cold['build'][0]:.2f}")
print(f"push-to-live with a warm cache: median {warm['push_to_live'][0]:.2f} s; runner overhead median {warm['overhead'][0]*1000:.0f} ms")
PY
