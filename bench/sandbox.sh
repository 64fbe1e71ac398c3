#!/usr/bin/env bash
# What terraform's sandbox costs: the same terraform module (terraform_data, local state)
# run by the runner for N commits, each as a deploy (plan and apply) and as a pull
# request's verify job (plan), once with deploys sandboxed (the default) and once with
# [projects.terraform] sandbox = false, in the same invocation. A verify job's plan is
# always sandboxed (as an unprivileged user, without a network); its baseline is the
# unsandboxed deploy's plan, the same commands with -lock=false aside.
#   bench/sandbox.sh [--smoke] [RUNS]      (default 5, --smoke 1, after one warm-up commit)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
RUNS=${1:-$(smoke_or 1 5)}
apt_need curl git bubblewrap

pipeline_setup
pipeline_workspace sandbox
repo="$work/repo"
webapp_repo "$repo" "$webapp_bin"
mkdir -p "$repo/infra"
cat >"$repo/infra/main.tf" <<'TF'
variable "image_url" {
  type = string
}

resource "terraform_data" "app" {
  input = var.image_url
}

output "image" {
  value = terraform_data.app.output
}
TF
git -C "$repo" add -A && git -C "$repo" -c user.name=b -c user.email=b@x commit -qm module

declare -A result
for sandbox in true false; do
  port=$(free_port); app_port=$(free_port); secret="bench-$RANDOM$RANDOM"
  {
    webapp_project_toml "$port" "$work/runner-$sandbox.db" "$unique" "$repo" "$registry" "$app_port"
    cat <<TOML
[projects.terraform]
dir = "infra"
backend_config = { path = "$work/state-$sandbox/terraform.tfstate" }
plan_pull_requests = true
sandbox = $sandbox
TOML
  } >"$work/runner.toml"
  BENCH_SECRET=$secret TERRAFORM_BIN=$TERRAFORM_BIN RUST_LOG=warn "$RUNNER" serve --config "$work/runner.toml" \
    >"$RESULTS/sandbox-runner-$sandbox.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/healthz"
  result[$sandbox]=$(python3 bench/sandbox.py "http://127.0.0.1:$port" "$secret" "$repo" \
    runner/tests/fixtures/github-webhooks/push.with-no-username-committer.payload.json \
    runner/tests/fixtures/github-webhooks/pull_request.opened.payload.json "$RUNS")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  docker rm -f "runner-$unique-production-a" "runner-$unique-production-b" >/dev/null 2>&1 || true
done
python3 - "${result[true]}" "${result[false]}" <<'PY'
import json, sys
on, off = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print()
print("== terraform's sandbox (medians)")
print(f"deploy plan:  sandboxed {on['deploy_plan']:.2f} s, unsandboxed {off['deploy_plan']:.2f} s; ratio {on['deploy_plan']/off['deploy_plan']:.2f}")
print(f"deploy apply: sandboxed {on['deploy_apply']:.2f} s, unsandboxed {off['deploy_apply']:.2f} s; ratio {on['deploy_apply']/max(off['deploy_apply'], 1e-9):.2f}")
print(f"verify plan (untrusted sandbox, no network) {on['verify_plan']:.2f} s; ratio to the unsandboxed deploy plan {on['verify_plan']/off['deploy_plan']:.2f}")
PY
