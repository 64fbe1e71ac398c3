"""Drives bench/sandbox.sh (progress on stderr, one JSON line on stdout): for N commits, a
push (a deploy: plan and apply) and a pull request (a verify job: its plan), each waited
for; prints the median seconds of the deploys' plan and apply steps and of the verify
jobs' plan step."""
import json, os, statistics, sys, time
import runner_client

base, secret, repo, push_fixture, pr_fixture, runs = sys.argv[1:7]
runs = int(runs)

def git(*args):
    return runner_client.git(repo, *args)

def get(path):
    return runner_client.get(base, path)

def deliver(event, payload):
    return runner_client.deliver(base, secret, event, payload)

def finished(job_id):
    while (job := get(f"/api/jobs/{job_id}"))["state"] in ("queued", "running"):
        time.sleep(0.02)
    if job["state"] != "succeeded":
        sys.exit(f"job {job_id} {job['state']}: {job.get('error')}\n{runner_client.log_tail(base, job_id)}")
    return {s["name"]: (s["finished_at"] - s["started_at"]) / 1000 for s in job["steps"] if s["finished_at"]}

rows = []
for i in range(runs + 1):
    with open(os.path.join(repo, "CHANGES"), "a") as f:
        f.write(f"change {i} {time.time()}\n")
    git("add", "-A"); git("commit", "-q", "-m", f"change {i}")
    sha = git("rev-parse", "HEAD")
    push = json.load(open(push_fixture))
    push["ref"], push["after"] = "refs/heads/master", sha
    push["repository"]["pushed_at"] = int(time.time()) + i
    deploy = finished(deliver("push", push))
    pr = json.load(open(pr_fixture))
    pr["action"], pr["pull_request"]["head"]["sha"] = "synchronize", sha
    pr["number"] = pr["pull_request"]["number"] = 1000 + i
    verify = finished(deliver("pull_request", pr))
    row = dict(deploy_plan=deploy["plan"], deploy_apply=deploy.get("apply", 0.0), verify_plan=verify["plan"])
    print(f"commit {i}{' (warm-up, not counted)' if i == 0 else ''}: " +
          ", ".join(f"{k} {v*1000:.0f} ms" for k, v in row.items()), file=sys.stderr)
    if i > 0:
        rows.append(row)
print(json.dumps({k: statistics.median(r[k] for r in rows) for k in rows[0]}))
