"""The fixtures every test module gets, from tests/support/: the sandbox API, S3 on moto,
PostgreSQL and Redis, all on loopback (the servers start on first use)."""

from support.moto_s3 import moto_auth, moto_s3_server, s3_bucket  # noqa: F401
from support.sandbox_api import sandbox, sandbox_server  # noqa: F401
from support.servers import postgres_server, redis_server  # noqa: F401
