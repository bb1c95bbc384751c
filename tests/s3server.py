"""A real S3 API on 127.0.0.1 for tests: moto's ``ThreadedMotoServer`` at a free port.

Use the fixtures by importing them into a test module::

    from tests.s3server import moto_endpoint, s3  # noqa: F401  (pytest fixtures)

    def test_something(s3):
        uri = s3.uri("out/shards/prepare/train")   # s3://<fresh bucket>/out/shards/prepare/train

``moto_endpoint`` (session) starts one server for the whole session; ``s3`` (per test)
creates a fresh bucket and sets, through ``monkeypatch``, fake credentials
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, recognisable so a test can grep any
output for them), ``AWS_DEFAULT_REGION`` and ``SHARDTRAIN_S3_ENDPOINT``; ``s3.env`` is the
same set for subprocesses. No network, no cloud account: the AWS config files are pointed
at nothing and instance metadata lookups are off. Without moto the tests skip with
"moto[server] not installed".
"""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FAKE_KEY_ID = "AKIASHARDTRAINFAKEID0"
FAKE_SECRET = "shardtrainFAKEsecretKEY0123456789abcdefXY"
REGION = "us-east-1"


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """Start moto's S3-compatible server on 127.0.0.1 for the session; yields ``http://127.0.0.1:PORT``."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("moto[server] not installed")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class S3Bucket:
    """A fresh bucket on the test server: ``uri(path)`` builds ``s3://bucket/path``."""

    endpoint: str
    bucket: str
    env: dict[str, str] = field(default_factory=dict)
    secret: str = FAKE_SECRET
    key_id: str = FAKE_KEY_ID

    def uri(self, path: str = "") -> str:
        """``s3://<bucket>/<path>``."""
        return f"s3://{self.bucket}/{path.lstrip('/')}".rstrip("/")

    def filesystem(self):
        """pyarrow's ``S3FileSystem`` on the server (for a test to poke objects directly)."""
        from pyarrow import fs

        return fs.S3FileSystem(endpoint_override=self.endpoint, region=REGION,
                               access_key=self.key_id, secret_key=self.secret)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (relative to the bucket), sorted."""
        from pyarrow import fs

        infos = self.filesystem().get_file_info(
            fs.FileSelector(f"{self.bucket}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True))
        return sorted(i.path[len(self.bucket) + 1:] for i in infos if i.type == fs.FileType.File)

    def put(self, key: str, data: bytes) -> None:
        """Write one object (bypassing shardtrain)."""
        with self.filesystem().open_output_stream(f"{self.bucket}/{key.lstrip('/')}", compression=None) as out:
            out.write(data)

    def get(self, key: str) -> bytes:
        """Read one object (bypassing shardtrain)."""
        with self.filesystem().open_input_stream(f"{self.bucket}/{key.lstrip('/')}", compression=None) as stream:
            return stream.read()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Bucket:
    """A fresh bucket and the environment that points shardtrain (and pyarrow) at the server."""
    env = {
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "SHARDTRAIN_S3_ENDPOINT": moto_endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    bucket = S3Bucket(endpoint=moto_endpoint, bucket=f"shardtrain-{uuid.uuid4().hex[:12]}", env=env)
    from pyarrow import fs

    fs.S3FileSystem(endpoint_override=moto_endpoint, region=REGION, access_key=FAKE_KEY_ID,
                    secret_key=FAKE_SECRET, allow_bucket_creation=True).create_dir(bucket.bucket)
    return bucket


@pytest.fixture
def ray_in_s3_env(s3):  # noqa: F811  (the fixture above)
    """A local Ray (2 CPUs) started after ``s3`` set the environment, so its workers hold the fake credentials.

    Workers of a Ray started earlier in the session have none (the runner passes the
    endpoint and region, never a credential); their unsigned uploads reach moto with
    aws-chunked framing that moto keeps in the object. A Ray that was running is restored.
    """
    import ray

    from shardtrain.stages.ray_exec import ensure_ray

    was_running = ray.is_initialized()
    if was_running:
        ray.shutdown()
    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()
    if was_running:
        ensure_ray(num_cpus=2)
