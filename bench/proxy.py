"""Drives bench/proxy.sh: DEPLOYS signed pushes of new commits, each waited for until it
answers through the proxy, then ROLLBACKS rollbacks to earlier deployments through the
API, back to back. Prints each one's push-to-answering time."""
import hashlib, hmac, json, subprocess, sys, time, urllib.request, uuid

base, secret, token, repo, fixture, app_port, deploys, rollbacks = sys.argv[1:9]
app_port, deploys, rollbacks = int(app_port), int(deploys), int(rollbacks)
payload = json.load(open(fixture))

def git(*args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout.strip()

def request(path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)

def live_commit():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/version", timeout=1) as r:
            return json.load(r).get("commit")
    except Exception:
        return None

def wait_job(job_id):
    while True:
        job = request(f"/api/jobs/{job_id}")
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)

def deploy(i):
    with open(f"{repo}/CHANGES", "a") as f:
        f.write(f"change {i} {uuid.uuid4()}\n")
    git("add", "-A"); git("-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", f"v{i}")
    sha = git("rev-parse", "HEAD")
    payload.update({"ref": "refs/heads/master", "after": sha})
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    t0 = time.perf_counter()
    job_id = request("/webhooks/github", body, {
        "Content-Type": "application/json", "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature})["job_id"]
    while live_commit() != sha:
        time.sleep(0.01)
    answering = time.perf_counter() - t0
    job = wait_job(job_id)
    assert job["state"] == "succeeded", job
    print(f"deploy {i}: answering through the proxy {answering:.2f} s after the push", flush=True)
    return job["deployment"]["id"]

deployed = [deploy(i) for i in range(deploys)]
for n, target in enumerate(reversed(deployed[:-1][-rollbacks:] if rollbacks else [])):
    t0 = time.perf_counter()
    job_id = request(f"/api/deployments/{target}/rollback", b"", {"Authorization": f"Bearer {token}"})["job_id"]
    job = wait_job(job_id)
    assert job["state"] == "succeeded", job
    print(f"rollback {n + 1} to deployment {target}: {time.perf_counter() - t0:.2f} s", flush=True)
