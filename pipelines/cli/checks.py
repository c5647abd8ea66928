"""The checks of `soundharvest doctor`: each answers one question about the setup in seconds.

Airbyte's `check` is the model: validate configuration and connectivity before any data
moves, and say in words what is wrong and what to do. Every check returns `Check`s; none
raises. Nothing here costs a generation: the API is asked about results only, once with an
empty list of ids (refused by validation, 422, after the key was accepted), then about a
few runs of the day's manifest (its task ids resolved first through the status endpoint)
for a real download URL, whose host is checked against the download policy without
downloading anything.
"""

import datetime as dt
import functools
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from resources.camb import (
    BULK_LIMIT,
    USER_AGENT,
    Answer,
    ClientSettings,
    Ready,
    interpret_result,
)
from resources.camb.netguard import DownloadPolicy, UnsafeDownload
from resources.camb.redact import redact_text, redact_url
from resources.camb.task_resolver import interpret_status, status_path
from resources.error_kinds import OperatorError
from resources.storage import Storage, StorageSettingError, storage_options_from_env
from resources.storage.probe import PROBE_PREFIX, probe_readable, probe_writable
from resources.storage.roots import ROOTS, root_url

KEY_VARIABLE, BASE_VARIABLE, HOSTS_VARIABLE = (
    "CAMB_API_KEY",
    "CAMB_API_BASE_URL",
    "CAMB_DOWNLOAD_ALLOW_HOSTS",
)
BULK_PATH = "text-to-sound-results"
PROBE_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
PROJECT = Path(__file__).resolve().parents[2]
# How far SOUNDHARVEST_FIRST_DAY may start before the first manifest without a warning: a
# month, the span `soundharvest status` shows by default and the README's range example, so
# a month of days whose manifests came late (or were never written) is not worth a word;
# beyond it most partitions the UI counts can never have runs.
FIRST_DAY_SLACK_DAYS = 31


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: a warning, or not checked (the detail says why)
    detail: str
    fix: str = ""


def api_key() -> Check:
    if os.environ.get(KEY_VARIABLE, "").strip():
        return Check("API key", True, f"{KEY_VARIABLE} is set")
    return Check(
        "API key",
        False,
        f"{KEY_VARIABLE} is not set",
        f"export {KEY_VARIABLE}=<your key> (CAMB.AI studio, API keys); the sandbox takes any",
    )


def settings() -> Check:
    """The pipeline's settings and the Definitions load (executor, backfill size, first day,
    storage options)."""
    from assets.harvest.settings import PipelineSettings

    try:
        PipelineSettings.from_env()
        storage_options_from_env()
        import pipelines.definitions  # noqa: F401  (structural settings are read at load)
    except StorageSettingError as exc:
        return Check("settings", False, exc.problem, exc.fix)
    except Exception as exc:
        return Check("settings", False, f"{type(exc).__name__}: {exc}", "fix the variable named")
    return Check("settings", True, "the SOUNDHARVEST_* settings and the Definitions load")


def first_day() -> Check | None:
    """A warning when SOUNDHARVEST_FIRST_DAY starts far before the first day with a manifest
    (the UI then counts mostly empty partitions), or after it (those days cannot be harvested).
    None when there is nothing to say, or no manifest to compare with."""
    from assets.harvest.manifest_files import first_manifest_day
    from assets.harvest.settings import FIRST_DAY_VARIABLE
    from assets.harvest.settings import first_day as configured

    try:
        first = configured()
        manifests = Storage(root_url("manifests"))
        day = first_manifest_day(manifests.listdir(""))
    except Exception:  # the settings and manifests root lines say what is wrong
        return None
    if day is None:
        return None
    fix = f"export {FIRST_DAY_VARIABLE}={day} (the UI, the schedule and backfills read it)"
    ahead = (dt.date.fromisoformat(day) - first).days
    if ahead > FIRST_DAY_SLACK_DAYS:
        return Check(
            "first day",
            None,
            f"{FIRST_DAY_VARIABLE}={first} starts {ahead} days before the first manifest "
            f"({day}): the UI counts {ahead} partitions that have no runs",
            fix,
        )
    if ahead < 0:
        return Check(
            "first day",
            None,
            f"{FIRST_DAY_VARIABLE}={first} starts after the first manifest ({day}): the days "
            "before it cannot be harvested",
            fix,
        )
    return Check("first day", True, f"{FIRST_DAY_VARIABLE}={first}, first manifest {day}")


def client_settings() -> ClientSettings:
    """The API client's settings as a step would build them (the key may be missing here)."""
    from resources.camb_resource import CambResource

    key = os.environ.get(KEY_VARIABLE, "").strip()
    return CambResource(api_key=key or "unset").settings()


def connection(run_ids: list[int], task_ids: list[str]) -> list[Check]:
    """The API checks and the download policy's, with the client's settings of a step."""
    try:
        client = client_settings()
    except ValueError as exc:  # SettingError: a CAMB_* value that cannot be used
        problem, fix = (exc.problem, exc.fix) if isinstance(exc, OperatorError) else (exc, "")
        return [Check("API settings", False, str(problem), fix or "fix the variable named")]
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not run_ids and task_ids and key:  # a day of task ids: resolve a few of them
        run_ids = _resolve_tasks(client, task_ids[:BULK_LIMIT], key)
    return [*api(client), download_host(client, run_ids)]


def _post_bulk(client: ClientSettings, run_ids: list[int], key: str | None) -> httpx.Response:
    headers = {"user-agent": USER_AGENT, **({"x-api-key": key} if key else {})}
    url = client.base_url.rstrip("/") + "/" + BULK_PATH
    return httpx.post(
        url, json={"run_ids": run_ids}, headers=headers, timeout=PROBE_TIMEOUT, trust_env=False
    )


def api(client: ClientSettings) -> list[Check]:
    """Does the API answer, is the base URL's path right, does it accept the key?"""
    key = os.environ.get(KEY_VARIABLE, "").strip() or None
    base = redact_url(client.base_url)
    try:
        response = _post_bulk(client, [], key)
    except httpx.HTTPError as exc:
        why = redact_text(str(exc)) or type(exc).__name__
        return [
            Check(
                "API answers",
                False,
                f"no answer from {base}: {why} ({type(exc).__name__})",
                f"check {BASE_VARIABLE} (default https://client.camb.ai/apis) and the network",
            ),
            Check("base URL path", None, "not checked: the API did not answer"),
            Check("API key accepted", None, "not checked: the API did not answer"),
        ]
    status = response.status_code
    answered = Check("API answers", True, f"{base} answered HTTP {status}")
    if status in (404, 405):
        return [
            answered,
            Check(
                "base URL path",
                False,
                f"POST {base}/{BULK_PATH} answered {status}: no such endpoint there",
                f"set {BASE_VARIABLE} to the API's root, e.g. https://client.camb.ai/apis "
                "(the sandbox prints its own)",
            ),
            Check("API key accepted", None, "not checked: wrong base URL path"),
        ]
    if status in (401, 403):
        refused = (
            Check(
                "API key accepted",
                False,
                f"the API refused the key (HTTP {status})",
                f"set {KEY_VARIABLE} to a valid key",
            )
            if key
            else Check("API key accepted", None, f"not checked: {KEY_VARIABLE} is not set")
        )
        return [
            answered,
            Check("base URL path", None, "not confirmed: the key was refused first"),
            refused,
        ]
    if status in (200, 422):  # 422: the empty list was refused by validation, past the key
        return [
            answered,
            Check("base URL path", True, f"POST .../{BULK_PATH} is the results endpoint"),
            Check("API key accepted", True, "the API took the key")
            if key
            else Check("API key accepted", None, f"not checked: {KEY_VARIABLE} is not set"),
        ]
    return [
        Check(
            "API answers",
            False,
            f"{base} answered HTTP {status} to a results call",
            "the API is throttling or failing right now: try again in a few minutes",
        ),
        Check("base URL path", None, f"not checked: HTTP {status}"),
        Check("API key accepted", None, f"not checked: HTTP {status}"),
    ]


def download_host(client: ClientSettings, run_ids: list[int]) -> Check:
    """Does the download policy admit the storage host of a real result URL?"""
    name = "download policy"
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not run_ids:
        return Check(name, None, "not checked: no accepted run id in the day's manifest (--day D)")
    if not key:
        return Check(name, None, f"not checked: {KEY_VARIABLE} is not set")
    try:
        url = _result_url(client, run_ids[: 2 * BULK_LIMIT], key)
    except httpx.HTTPError as exc:
        return Check(name, None, f"not checked: {type(exc).__name__} asking for a URL")
    if url is None:
        return Check(name, None, "not checked: none of the runs asked about has a URL yet")
    policy = DownloadPolicy(client.download_allow_hosts)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        policy.check_url(url)
        if not policy.allows(host):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            policy.vet(host, sorted({str(info[4][0]) for info in found}))
    except UnsafeDownload as exc:
        return Check(
            name,
            False,
            str(exc),
            f"if {host} is your own storage (the sandbox's 127.0.0.1, a private MinIO), add "
            f"it to {HOSTS_VARIABLE}",
        )
    except OSError as exc:
        return Check(name, False, f"download host {host} does not resolve: {exc}", "check DNS")
    exempt = f" ({HOSTS_VARIABLE})" if policy.allows(host) else ""
    return Check(name, True, f"downloads from {parts.scheme}://{host} are allowed{exempt}")


def _result_url(client: ClientSettings, run_ids: list[int], key: str) -> str | None:
    """A presigned URL of one of `run_ids`: asked in batches, then one by one when the API
    refuses a batch (a run of another type fails its whole batch with 400)."""
    batches = [run_ids[i : i + BULK_LIMIT] for i in range(0, len(run_ids), BULK_LIMIT)]
    for batch in batches:
        response = _post_bulk(client, batch, key)
        if response.status_code != 200 and len(batch) > 1:
            batches += [[run_id] for run_id in batch]
            continue
        answers = response.json() if response.status_code == 200 else None
        for run_id, value in (answers if isinstance(answers, dict) else {}).items():
            result = interpret_result(int(run_id), value) if run_id.isdigit() else None
            if isinstance(result, Ready):
                return result.url.value
    return None


def storage_roots() -> Iterator[Check]:
    """The manifest root can be read; every other root written, read back and cleaned."""
    try:
        storage_options_from_env()
    except StorageSettingError as exc:  # every root would say the same: the settings line does
        for name in ROOTS:
            yield Check(f"{name} root", None, f"not checked: {exc.setting} cannot be used")
        return
    for name, (variable, _) in ROOTS.items():
        if name == "prompts":  # optional: generation_checks.py says what is there
            continue
        try:
            root = functools.partial(Storage, root_url(name), setting=variable)
            if name != "manifests":
                # The steps' own write probe first, so doctor says what a harvest would say.
                yield _read_back(probe_writable(root), name, variable)
                continue
            storage = probe_readable(root)
            if storage.exists(""):
                storage.listdir("")
                yield Check(f"{name} root", True, f"{storage.uri('')} is readable")
            else:
                yield Check(
                    f"{name} root",
                    False,
                    f"{storage.uri('')} does not exist",
                    f"point {variable} at the folder or bucket of your manifests",
                )
        except OperatorError as exc:  # a lasting cause, unreachable, full: said as such
            yield Check(f"{name} root", False, exc.problem, exc.fix)
        except Exception as exc:
            yield Check(
                f"{name} root",
                False,
                redact_text(str(exc)),
                f"check {variable} and its storage (it may be passing trouble: try again)",
            )


def _read_back(storage: Storage, name: str, variable: str) -> Check:
    probe = PROBE_PREFIX + secrets.token_hex(6)  # `_`: catalog readers skip it
    data = b"soundharvest doctor: written, read back and removed at once\n"
    storage.write_bytes(data, probe)
    try:
        if storage.read_bytes(probe) != data:
            return Check(
                f"{name} root",
                False,
                f"{storage.uri(probe)} read back other bytes than written",
                f"check the storage behind {variable}",
            )
    finally:
        storage.remove(probe)
    return Check(f"{name} root", True, f"{storage.uri('')} can be written, read back and cleaned")


def manifests(day: str) -> tuple[Check, list[int], list[str]]:
    """The manifests of `day` are found and parse; their accepted run ids and task ids."""
    from assets.harvest.manifest_files import ManifestError, load_day

    name = f"manifests of {day}"
    try:
        storage_options_from_env()
    except StorageSettingError as exc:
        return Check(name, None, f"not checked: {exc.setting} cannot be used"), [], []
    try:
        storage = Storage(root_url("manifests"))
        rows = load_day(storage.fs, storage.root, day)
    except ManifestError as exc:
        return Check(name, False, str(exc), exc.fix), [], []
    except Exception as exc:
        fix = f"check {ROOTS['manifests'][0]}"
        return Check(name, False, redact_text(str(exc)), fix), [], []
    if rows.empty:
        where = storage.uri(day)
        return Check(name, None, f"no manifest at {where}[.csv|.jsonl|.parquet]: no runs"), [], []
    accepted = rows[rows["status"] == "accepted"]
    files = rows["manifest"].nunique()
    rejected = len(rows) - len(accepted)
    detail = f"{len(rows)} rows in {files} file(s), {rejected} rejected"
    run_ids = [int(i) for i in accepted["run_id"].dropna()]
    tasks = accepted["task_id"].dropna().astype(str) if "task_id" in accepted else []
    return Check(name, True, detail), run_ids, list(tasks)


def _resolve_tasks(client: ClientSettings, task_ids: list[str], key: str) -> list[int]:
    """The run ids of those of `task_ids` that succeeded (one status call each)."""
    run_ids = []
    for task_id in task_ids:
        try:
            response = httpx.get(
                client.base_url.rstrip("/") + "/" + status_path(task_id),
                headers={"user-agent": USER_AGENT, "x-api-key": key},
                timeout=PROBE_TIMEOUT,
                trust_env=False,
            )
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            continue
        if isinstance(body, dict):
            answer = interpret_status(task_id, Answer(200, body, None))
            if answer.run_id is not None:
                run_ids.append(answer.run_id)
    return run_ids


def dagster_instance() -> list[Check]:
    """`DAGSTER_HOME` is set and usable, its storage answers, the `camb_api` pool has a limit."""
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if not home:
        return [
            Check(
                "DAGSTER_HOME",
                False,
                "not set: runs would not be recorded where the UI shows them",
                f"export DAGSTER_HOME={PROJECT / '.dagster_home'} (any folder; copy "
                "pipelines/dagster.yaml into it for the camb_api pool)",
            )
        ]
    if not Path(home).exists():
        return [
            Check(
                "DAGSTER_HOME",
                None,
                f"{home} does not exist yet: `soundharvest harvest` makes it, with the "
                "camb_api pool of pipelines/dagster.yaml",
            )
        ]
    if not Path(home).is_dir():
        return [
            Check(
                "DAGSTER_HOME",
                False,
                f"{home} is not a directory",
                f"mkdir -p {home}, or point DAGSTER_HOME at the instance's folder",
            )
        ]
    from dagster import DagsterInstance

    from resources.camb.limits import POOL, pool_limit

    try:
        with DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
            kind = type(instance.run_storage).__name__
            events = type(instance.event_log_storage).__name__
            limit = pool_limit(instance)
            runs = [dead_runs(instance), run_monitoring(instance)]
    except Exception as exc:
        return [
            Check("DAGSTER_HOME", True, home),
            Check(
                "Dagster storage",
                False,
                redact_text(f"{type(exc).__name__}: {exc}").splitlines()[0],
                f"check {home}/dagster.yaml (storage section) and that its database answers",
            ),
        ]
    pool = (
        Check(f"{POOL} pool", True, f"at most {limit} days call the API at once")
        if limit
        else Check(
            f"{POOL} pool",
            None,
            "no limit: parallel days each take the API's whole rate",
            f"copy the concurrency block of pipelines/dagster.yaml into {home}/dagster.yaml",
        )
    )
    checks = [Check("DAGSTER_HOME", True, home), Check("Dagster storage", True, f"{kind} answers")]
    if events == "SqliteEventLogStorage":  # Dagster's own: pipelines/event_log.py says why not
        checks.append(
            Check(
                "event log",
                None,
                "Dagster's own SQLite event log: steps of processes started together can share "
                f"a {POOL} slot, and a range run writes its events one by one",
                f"copy the event_log_storage block of pipelines/dagster.yaml into "
                f"{home}/dagster.yaml",
            )
        )
    return [*checks, pool, *runs]


def dead_runs(instance) -> Check:
    """Runs in progress whose process is gone: marked failed (assets/steps/dead_runs.py)."""
    from pipelines.cli.day_runs import mark_dead

    gone = mark_dead(instance, "soundharvest doctor")
    if not gone:
        return Check("dead runs", True, "no run in progress has lost its process")
    return Check(
        "dead runs",
        None,
        "marked failed: " + "; ".join(map(str, gone)),
        "nothing more: the queued runs of those days start now; `soundharvest harvest DAY` "
        "finishes a day (its files so far are kept)",
    )


def run_monitoring(instance) -> Check:
    """The daemon marks dead runs itself: the project's run launcher and run monitoring."""
    from pipelines.run_launcher import HostRunLauncher

    if isinstance(instance.run_launcher, HostRunLauncher) and instance.run_monitoring_enabled:
        every = instance.run_monitoring_poll_interval_seconds
        return Check(
            "run monitoring",
            True,
            f"with the daemon, a run whose process is gone is marked failed within {every} s",
        )
    return Check(
        "run monitoring",
        None,
        "the daemon does not mark a run whose process is gone (only soundharvest commands do)",
        f"copy the run_launcher and run_monitoring blocks of pipelines/dagster.yaml into "
        f"{os.environ.get('DAGSTER_HOME', '$DAGSTER_HOME')}/dagster.yaml",
    )


def yesterday() -> str:
    """The day the daily schedule harvests next: the last complete UTC day."""
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
