"""Drives bench/proxy.sh: DEPLOYS signed pushes of new commits, each waited for until it
answers through the proxy, then ROLLBACKS rollbacks to earlier deployments through the
API, back to back. Prints each one's push-to-answering time. With PREVIEW_PORT, meanwhile
a pull request is opened and closed again and again: each time its preview answers on
PREVIEW_PORT, then is removed."""
import hashlib, hmac, json, os, subprocess, sys, threading, time, urllib.request, uuid

base, secret, token, repo, fixture, app_port, deploys, rollbacks = sys.argv[1:9]
app_port, deploys, rollbacks = int(app_port), int(deploys), int(rollbacks)
preview_port = int(sys.argv[9]) if len(sys.argv) > 9 else None
payload = json.load(open(fixture))
fixtures = os.path.dirname(fixture)

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

def deliver(event, body):
    body = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return request("/webhooks/github", body, {
        "Content-Type": "application/json", "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": signature})

def previews(stop):
    """Opens pull request 1 at master's head, waits for its preview, closes it, waits
    until it is removed; again until `stop`."""
    opened = json.load(open(f"{fixtures}/pull_request.opened.payload.json"))
    closed = json.load(open(f"{fixtures}/pull_request.closed.payload.json"))
    n = 0
    while not stop.is_set():
        sha = git("rev-parse", "HEAD")
        git("update-ref", "refs/pull/1/head", sha)
        for body, action in ((opened, "opened"), (closed, "closed")):
            body.update({"action": action, "number": 1})
            body["pull_request"]["head"]["sha"] = sha
        t0 = time.perf_counter()
        job = wait_job(deliver("pull_request", opened)["job_id"])
        assert job["state"] == "succeeded", job
        with urllib.request.urlopen(f"http://127.0.0.1:{preview_port}/version", timeout=5) as r:
            assert json.load(r)["commit"] == sha
        live = time.perf_counter() - t0
        deliver("pull_request", closed)
        while True:
            listed = request("/api/previews")["previews"]
            if all(p["state"] == "removed" for p in listed):
                break
            time.sleep(0.05)
        n += 1
        print(f"preview {n}: live {live:.2f} s after the pull request opened, then removed", flush=True)

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

stop = threading.Event()
failures = []

def churn_previews():
    try:
        previews(stop)
    except Exception as error:
        failures.append(error)

churn = threading.Thread(target=churn_previews) if preview_port else None
if churn:
    churn.start()
deployed = [deploy(i) for i in range(deploys)]
for n, target in enumerate(reversed(deployed[:-1][-rollbacks:] if rollbacks else [])):
    t0 = time.perf_counter()
    job_id = request(f"/api/deployments/{target}/rollback", b"", {"Authorization": f"Bearer {token}"})["job_id"]
    job = wait_job(job_id)
    assert job["state"] == "succeeded", job
    print(f"rollback {n + 1} to deployment {target}: {time.perf_counter() - t0:.2f} s", flush=True)
stop.set()
if churn:
    churn.join()
    if failures:
        raise failures[0]
