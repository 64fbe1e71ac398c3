"""Drives bench/sandbox.sh (progress on stderr, one JSON line on stdout): for N commits, a
push (a deploy: plan and apply) and a pull request (a verify job: its plan), each waited
for; prints the median seconds of the deploys' plan and apply steps and of the verify
jobs' plan step."""
import hashlib, hmac, json, os, statistics, subprocess, sys, time, urllib.request, uuid

base, secret, repo, push_fixture, pr_fixture, runs = sys.argv[1:7]
runs = int(runs)

def git(*args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True,
                          env=dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x",
                                   GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")).stdout.strip()

def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)

def deliver(event, body):
    data = json.dumps(body).encode()
    sig = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    req = urllib.request.Request(base + "/webhooks/github", data=data, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sig})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["job_id"]

def finished(job_id):
    while (job := get(f"/api/jobs/{job_id}"))["state"] in ("queued", "running"):
        time.sleep(0.02)
    if job["state"] != "succeeded":
        sys.exit(f"job {job_id} {job['state']}: {job.get('error')}")
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
