"""Real object-store and HTTP servers on 127.0.0.1 (tests, benches): moto's S3 server and a static HTTP file server.

moto lives in its own virtualenv, `.build/moto-venv` (`make moto-venv`, or made here on first use from the pinned
`tests/support/moto-requirements.txt`): in the project's environment it upgrades botocore past what aiobotocore
(s3fs) accepts. Its S3 server enforces authentication (`INITIAL_NO_AUTH_ACTION_COUNT`): the first actions (the IAM
user, its key and policy) run unauthenticated, then every request must be signed with a key moto issued, so a wrong
secret key really fails (SignatureDoesNotMatch). Both servers stop, by PID, when their context exits.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components.lock import PROJECT_DIR
from tools.local_dask import free_port, spawn, stop_process_groups

MOTO_VENV = PROJECT_DIR / ".build" / "moto-venv"
MOTO_REQUIREMENTS = PROJECT_DIR / "tests" / "support" / "moto-requirements.txt"
LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
# Unauthenticated actions before moto starts checking signatures: CreateUser, CreateAccessKey, PutUserPolicy.
SETUP_ACTIONS = 3

# Runs in the moto virtualenv (boto3): creates the IAM user, key and policy, then the bucket with that key.
SETUP_SCRIPT = """
import json, sys
import boto3

endpoint, bucket, region = sys.argv[1:4]
iam = boto3.client("iam", endpoint_url=endpoint, region_name=region,
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="lsdb-reader")
key = iam.create_access_key(UserName="lsdb-reader")["AccessKey"]
iam.put_user_policy(UserName="lsdb-reader", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket=bucket)
print(json.dumps({"accessKeyId": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"]}))
"""


def ensure_moto_venv() -> Path:
    """The moto virtualenv's python, created from the pinned requirements if missing (needs PyPI once)."""
    python = MOTO_VENV / "bin" / "python"
    stamp = MOTO_VENV / ".installed"
    if stamp.is_file() and stamp.read_text() == MOTO_REQUIREMENTS.read_text():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(MOTO_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-r", str(MOTO_REQUIREMENTS)], check=True
    )
    stamp.write_text(MOTO_REQUIREMENTS.read_text())
    return python


@dataclass
class S3Server:
    """A moto S3 server with one bucket and the access key moto issued for it."""

    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = REGION

    def storage_options(self) -> dict[str, object]:
        """s3fs options for this test process (the pods get the same through their environment)."""
        return {
            "key": self.access_key_id,
            "secret": self.secret_access_key,
            "endpoint_url": self.endpoint,
            "client_kwargs": {"region_name": self.region},
        }

    def upload(self, local_dir: Path, prefix: str) -> str:
        """Copy a local directory tree into the bucket under `prefix`; return its s3:// URL."""
        import s3fs  # type: ignore[import-untyped]

        fs = s3fs.S3FileSystem(**self.storage_options())
        url = f"{self.bucket}/{prefix.strip('/')}"
        fs.put(str(local_dir).rstrip("/") + "/", url, recursive=True)
        return f"s3://{url}"


@contextlib.contextmanager
def s3_server(workdir: Path, bucket: str = "lsdb-catalogs") -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, authentication enforced; stopped (by PID) on exit."""
    python = ensure_moto_venv()
    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    log = workdir / "moto.log"
    env = {"PATH": os.environ.get("PATH", ""), "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)}
    proc = spawn([str(MOTO_VENV / "bin" / "moto_server"), "-H", LOOPBACK, "-p", str(port)], log, env)
    try:
        _wait_http(endpoint + "/moto-api/", proc, log)
        setup = subprocess.run(
            [str(python), "-c", SETUP_SCRIPT, endpoint, bucket, REGION],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ.get("PATH", "")},
        )
        if setup.returncode != 0:
            raise RuntimeError(f"moto setup failed:\n{setup.stderr}")
        key = json.loads(setup.stdout.strip().splitlines()[-1])
        yield S3Server(endpoint, bucket, key["accessKeyId"], key["secretAccessKey"])
    finally:
        stop_process_groups([proc], grace=5.0)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}):\n{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered at {url} within {timeout:g} s")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_file_server(root: Path) -> Iterator[str]:
    """Serve `root` read-only over HTTP on a free loopback port (a thread of this process); yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="http-file-server", daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
