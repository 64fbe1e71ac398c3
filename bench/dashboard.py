"""Helpers of bench/dashboard.sh.
  dashboard.py seed DB PROJECT DEPLOYMENTS LOG_LINES   fill a migrated database; prints the id of a job with a long log
  dashboard.py sse BASE SECRET REPO FIXTURE RUNS       push RUNS commits, follow each job's live log; prints latencies as JSON
"""
import hashlib, hmac, http.client, json, os, random, sqlite3, statistics, subprocess, sys, time, urllib.parse, urllib.request, uuid

LINES_PER_BIG_JOB = 1000

def seed(db_path, project, deployments, log_lines):
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    now = int(time.time() * 1000)
    start = now - deployments * 60_000
    rnd = random.Random(7)
    outcomes = [rnd.choices(["live", "failed", "rolled_back"], [90, 8, 2])[0] for _ in range(deployments)]
    # One deployment per environment is live (a unique index holds it): every one that went
    # live before the newest was replaced by the next one that did.
    went_live = [i for i, outcome in enumerate(outcomes) if outcome == "live"]
    replaced_by = {earlier: later for earlier, later in zip(went_live, went_live[1:])}
    jobs, deps = [], []
    for i in range(deployments):
        t = start + i * 60_000
        sha = hashlib.sha1(str(i).encode()).hexdigest()
        job_id = i + 1
        state = "succeeded" if outcomes[i] == "live" else "failed"
        status = "replaced" if i in replaced_by else outcomes[i]
        jobs.append((job_id, project, "production", "deploy", "push", state, "refs/heads/master", sha, t,
                     f"Change number {i}: adjust the greeting\n\nLonger body of the commit message.", "Codertocat",
                     1, None if state == "succeeded" else "smoke test failed: /health answered 503", t, t + 1000, t + 9000, t + 9000))
        deps.append((i + 1, job_id, project, "production", sha, f"127.0.0.1:5000/{project}:{sha[:12]}",
                     "sha256:" + hashlib.sha256(sha.encode()).hexdigest(), "push", status, i if i else None,
                     "http://127.0.0.1:8000/", None, t + 1000, t + 9000,
                     replaced_by[i] + 1 if i in replaced_by else None))
    db.executemany("""INSERT INTO jobs (id, project, environment, kind, trigger, state, git_ref, sha, ordering_key,
        commit_message, commit_author, attempts, error, created_at, started_at, finished_at, updated_at)
        VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""", jobs)
    db.executemany("""INSERT INTO deployments (id, job_id, project, environment, sha, image_ref, image_digest, trigger,
        status, replaced_id, url, error, started_at, finished_at, replaced_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""", deps)
    steps = [(j[0], p, n, "succeeded", j[14], j[15]) for j in jobs
             for p, n in enumerate(["checkout", "build", "smoke", "push", "rollout", "record"])]
    db.executemany("INSERT INTO job_steps (job_id, position, name, state, started_at, finished_at) VALUES (?,?,?,?,?,?)", steps)
    # The log lines go to the newest jobs, LINES_PER_BIG_JOB each.
    big_jobs = max(1, log_lines // LINES_PER_BIG_JOB)
    first = deployments - big_jobs + 1
    def lines():
        for job_id in range(first, deployments + 1):
            for seq in range(1, LINES_PER_BIG_JOB + 1):
                yield (job_id, seq, now, "stdout", f"Step {seq % 7}/7 : RUN something useful, output line {seq} of job {job_id}")
    db.executemany("INSERT INTO job_logs (job_id, seq, at, stream, line) VALUES (?,?,?,?,?)", lines())
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    print(first + big_jobs // 2)

def sse(base, secret, repo, fixture, runs):
    """Pushes commits; for each job follows /api/jobs/{id}/logs as text/event-stream from
    the start and records, for every line, receive time minus the time the job wrote it."""
    url = urllib.parse.urlparse(base)
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")
    git = lambda *a: subprocess.run(["git", "-C", repo, *a], check=True, capture_output=True, text=True, env=env).stdout.strip()
    latencies = []
    for i in range(runs):
        with open(os.path.join(repo, "CHANGES"), "a") as f:
            f.write(f"sse {i} {time.time()}\n")
        git("add", "-A"); git("commit", "-q", "-m", f"sse {i}")
        sha = git("rev-parse", "HEAD")
        push = json.load(open(fixture)); push["ref"], push["after"] = "refs/heads/master", sha
        # Newer than every seeded deploy, or the push would be stale and queue nothing.
        push["repository"]["pushed_at"] = int(time.time()) + i
        body = json.dumps(push).encode()
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(base + "/webhooks/github", data=body, method="POST", headers={
            "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sig})
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.load(r)
        if "job_id" not in answer:
            sys.exit(f"push {i} queued no job: {answer}")
        job_id = answer["job_id"]
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        conn.request("GET", f"/api/jobs/{job_id}/logs", headers={"Accept": "text/event-stream"})
        resp = conn.getresponse()
        event, data, state = "message", [], None
        while True:
            raw = resp.fp.readline()
            if not raw:
                break
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif line == "":
                if data:
                    received = time.time() * 1000
                    if event == "message":
                        latencies.append(received - json.loads("\n".join(data))["at"])
                    elif event == "end":
                        state = "\n".join(data)
                        break
                event, data = "message", []
        conn.close()
        if state != "succeeded":
            sys.exit(f"job {job_id} ended {state}")
        print(f"deploy {i}: {len(latencies)} lines so far", file=sys.stderr)
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
    print(json.dumps({"lines": len(latencies), "p50": q(0.5), "p99": q(0.99), "max": latencies[-1]}))

if __name__ == "__main__":
    if sys.argv[1] == "seed":
        seed(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "sse":
        sse(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
