"""What the pipeline benches share: commits in a test repository, the runner's JSON API
and signed webhook deliveries."""
import hashlib, hmac, json, os, subprocess, urllib.request, uuid

def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True,
                          env=dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x",
                                   GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")).stdout.strip()

def get(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)

def deliver(base, secret, event, payload):
    """Sends `payload` as a signed `event` delivery; returns the queued job's id."""
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(base + "/webhooks/github", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sig})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["job_id"]

def log_tail(base, job_id, lines=30):
    """The last lines of a job's log, for the message of a bench that stops on a failed job."""
    with urllib.request.urlopen(f"{base}/api/jobs/{job_id}/logs", timeout=10) as r:
        return "\n".join(r.read().decode(errors="replace").splitlines()[-lines:])
