"""A local stand-in for the CAMB.AI text-to-sound API, served over real HTTP.

Shapes follow the vendor SDK (camb-sdk) and docs; where the real API is undocumented the
sandbox deliberately varies the shapes (see `rules.bulk_shape`), and it injects faults at
random rates, from a script, or per run id (`faults.py` lists them), so clients can be tested
against everything the real service may do.

Here: `make_app` (the routes and the middlewares) and `SandboxServer` (the app on a real
socket, served from a thread of its own). The parts: `api` (the results endpoints and what
every API call goes through), `tasks` (creating a task, a task's status), `downloads`
(presigned downloads), `control` (the /_sandbox/ control plane), `state` (what they share),
`faults`, `stats`, `answers` (the API's answer shapes), `connection` (faults that give no
answer), and `rules` and `audio` (what each run id gives).
"""

import asyncio
import dataclasses
import socket
import threading
import time
from typing import Any

from aiohttp import web

from sandbox.api import api_middleware, bulk_results, single_result
from sandbox.control import control_faults, control_reset, control_script, control_stats
from sandbox.downloads import download
from sandbox.faults import Faults, Target
from sandbox.state import STATE, State
from sandbox.tasks import TASKS, create_task, task_status

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


@web.middleware
async def _in_flight_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Counts API calls and downloads being answered, for the peak in `max_in_flight`."""
    if request.path.startswith("/_sandbox/"):
        return await handler(request)
    state = request.app[STATE]
    state.counters.track(+1)
    try:
        return await handler(request)
    finally:
        state.counters.track(-1)


def make_app(state: State) -> web.Application:
    app = web.Application(middlewares=[_in_flight_middleware, api_middleware])
    app[STATE] = state
    app[TASKS] = state.tasks
    app.router.add_post("/apis/text-to-sound-results", bulk_results)
    app.router.add_get("/apis/text-to-sound-result/{run_id}", single_result)
    app.router.add_post("/apis/text-to-sound", create_task)
    app.router.add_get("/apis/text-to-sound/{task_id}", task_status)
    app.router.add_get(r"/files/{name:\d+\.(?:wav|flac|mp3)}", download)
    app.router.add_get("/_sandbox/stats", control_stats)
    app.router.add_route("*", "/_sandbox/faults", control_faults)
    app.router.add_post("/_sandbox/script", control_script)
    app.router.add_post("/_sandbox/reset", control_reset)
    return app


class SandboxServer:
    """The sandbox API on a real socket, served from a daemon thread with its own loop.

    Usage::

        with SandboxServer(api_key="k", faults=Faults(throttle_rate=0.1)) as sb:
            sb.base_url  # "http://127.0.0.1:PORT/apis"
            sb.script("download", "truncate")  # the next download is cut short

    Without `api_key`, any non-empty `x-api-key` passes. `port=0` picks a free port.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        faults: Faults | None = None,
        access_log: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._access_log = access_log
        self._state = State(api_key, dataclasses.replace(faults) if faults else Faults())
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox is not started")
        return self._port

    @property
    def origin(self) -> str:
        """`http://host:port`, the origin of the API and of its presigned URLs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/apis"

    @property
    def faults(self) -> Faults:
        """A copy of the current faults; change them with `set_faults`."""
        return dataclasses.replace(self._state.faults)

    def set_faults(self, **changes: Any) -> Faults:
        """Update some fault settings, effective from the next request."""
        return dataclasses.replace(self._state.set_faults(changes))

    def script(self, target: Target, *kinds: str) -> None:
        """The next requests of `target` ("api" or "download") get exactly these faults."""
        self._state.plan.script(target, kinds)

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset.

        api_requests: every request under /apis (faulted ones too); bulk_requests and
        bulk_batch_sizes (when `run_ids` is a list), single_requests and
        status_requests (status_polls: per task id): those that got past faults and auth;
        create_requests: creates that got past faults, auth and validation (those refused
        402 too), tasks_created and creates_by_prompt (prompt -> tasks created): a create
        served and then lost (`lost`) counts, one answered 429/5xx/drop does not;
        downloads: /files requests served or faulted, download_redirects:
        those answered 307; downloads_with_api_key: /files requests that carried
        `x-api-key`; max_in_flight_api: peak concurrent API requests; max_in_flight: peak
        concurrent API requests and downloads together (each counted until its handler has
        answered); faults_injected: kind -> count.
        """
        return self._state.counters.snapshot()

    def reset_stats(self) -> None:
        self._state.reset()

    def reset(self) -> None:
        """Reset the stats and forget scripted faults not yet served."""
        self._state.reset(scripts=True)

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until no request is being answered (a client that gave up on a slow create
        leaves it running, to be counted after a reset); False if still busy at the end."""
        deadline = time.monotonic() + timeout_s
        while self._state.counters.in_flight() > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def start(self) -> "SandboxServer":
        if self._thread is not None:
            raise RuntimeError("the sandbox is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self._requested_port), family=family, backlog=1024)
        self._port = sock.getsockname()[1]
        if self.host not in _WILDCARD_HOSTS:
            self._state.origin = self.origin
        # No access log by default: one line per request would drown a benchmark.
        log_options: dict[str, Any] = {} if self._access_log else {"access_log": None}
        runner = web.AppRunner(make_app(self._state), shutdown_timeout=1.0, **log_options)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.SockSite(runner, sock, backlog=1024).start())
            except BaseException as exc:  # reported to start() in the calling thread
                failure.append(exc)
                sock.close()
                loop.close()
                return
            finally:
                started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            # Handlers of connections the cleanup closed (a hang, a keep-alive) end here,
            # not as "Task was destroyed but it is pending" when the loop closes.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name=f"sandbox-{self._port}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread = self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = self._loop = None

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
