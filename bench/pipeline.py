"""Drives bench/pipeline.sh (progress on stderr, the summary as one JSON line on stdout): pushes N commits to a running runner, waits for each to go
live, and splits each push-to-live time into engine/registry/git time and the runner's
own overhead (queue pickup, gaps between steps, bookkeeping)."""
import json, os, statistics, sys, time, urllib.request
import runner_client

base, secret, repo, fixture, app_port, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
EXTERNAL = {"checkout", "build", "smoke", "push", "rollout"}

def git(*args):
    return runner_client.git(repo, *args)

def get(path):
    return runner_client.get(base, path)

def deliver(sha):
    push = json.load(open(fixture))
    push["ref"], push["after"] = "refs/heads/master", sha
    return runner_client.deliver(base, secret, "push", push)

def live_commit():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/version", timeout=1) as r:
            return json.load(r)["commit"]
    except Exception:
        return None

rows = []
for i in range(runs + 1):
    with open(os.path.join(repo, "CHANGES"), "a") as f:
        f.write(f"change {i} {time.time()}\n")
    git("add", "-A"); git("commit", "-q", "-m", f"change {i}")
    sha = git("rev-parse", "HEAD")
    t0 = time.perf_counter()
    job_id = deliver(sha)
    while live_commit() != sha:
        job = get(f"/api/jobs/{job_id}")
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.01)
    push_to_live = time.perf_counter() - t0
    while (job := get(f"/api/jobs/{job_id}"))["state"] in ("queued", "running"):
        time.sleep(0.01)
    if job["state"] != "succeeded":
        sys.exit(f"deploy {i} {job['state']}: {job.get('error')}")
    steps = {s["name"]: (s["finished_at"] - s["started_at"]) / 1000 for s in job["steps"]}
    wall = (job["finished_at"] - job["created_at"]) / 1000
    pickup = (job["started_at"] - job["created_at"]) / 1000
    external = sum(v for k, v in steps.items() if k in EXTERNAL)
    rows.append(dict(push_to_live=push_to_live, wall=wall, pickup=pickup, external=external,
                     overhead=wall - external, **steps))
    print(f"deploy {i}{' (warm-up, not counted)' if i == 0 else ''}: push-to-live {push_to_live:.2f} s, "
          + ", ".join(f"{k} {v*1000:.0f} ms" for k, v in steps.items())
          + f", pickup {pickup*1000:.0f} ms, runner overhead {(wall-external)*1000:.0f} ms", file=sys.stderr, flush=True)

if os.environ.get("BENCH_KEEP_LOG"):
    with urllib.request.urlopen(f"{base}/api/jobs/{job_id}/logs", timeout=10) as r, open(os.environ["BENCH_KEEP_LOG"], "wb") as out:
        out.write(r.read())

counted = rows[1:]
def med(key): return statistics.median(r[key] for r in counted)
def worst(key): return max(r[key] for r in counted)
summary = {k: [med(k), worst(k)] for k in ("push_to_live", "external", "overhead", "pickup", "build")}
summary["first_build"] = rows[0]["build"]
# Every step's median, the repository's own steps included (bench/steps.sh reads them).
summary["steps"] = {k: med(k) for k in counted[0] if k not in summary and k != "wall" and all(k in r for r in counted)}
print(json.dumps(summary))
