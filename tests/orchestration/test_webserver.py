"""`dagster-webserver` loads the code location the way a deployment does (`workspace.yaml`),
and its GraphQL API lists every asset, check, schedule and sensor of the Definitions.

The expected names come from `pipelines.definitions.defs`, so new assets keep this honest.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines.definitions import defs
from pipelines.instance_home import prepare

from support import PROJECT
from support.servers import free_port, stop

pytestmark = pytest.mark.slow

QUERY = """
{
  workspaceOrError {
    __typename
    ... on PythonError { message }
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              assetNodes {
                assetKey { path }
                assetChecksOrError { ... on AssetChecks { checks { name } } }
              }
              schedules { name }
              sensors { name }
            }
          }
        }
      }
    }
  }
}
"""


def test_the_webserver_loads_the_location_with_everything_in_it(tmp_path):
    port = free_port()
    # The demo's instance config, as `dg dev` on `.dagster_home` reads it (its event log
    # storage is the project's: pipelines/event_log.py).
    home = prepare(tmp_path / "dagster_home", PROJECT / "pipelines" / "dagster.yaml")
    log = (tmp_path / "webserver.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml",
        ],
        cwd=PROJECT, env=os.environ | {"DAGSTER_HOME": str(home)}, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the webserver did not answer in time"
            time.sleep(0.5)
        answer = httpx.post(f"{url}/graphql", json={"query": QUERY}, timeout=120).json()
    finally:
        stop(server)
        log.close()

    assert "errors" not in answer, answer
    workspace = answer["data"]["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", workspace
    [entry] = workspace["locationEntries"]
    location = entry["locationOrLoadError"]
    assert (entry["loadStatus"], location["__typename"]) == ("LOADED", "RepositoryLocation"), entry
    [repository] = location["repositories"]
    graph = defs.resolve_asset_graph()
    assets = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    assert assets == {key.to_user_string() for key in graph.get_all_asset_keys()}
    checks = {
        ("/".join(node["assetKey"]["path"]), check["name"])
        for node in repository["assetNodes"]
        for check in node["assetChecksOrError"].get("checks", [])
    }
    assert checks == {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {s["name"] for s in repository["schedules"]} == {s.name for s in defs.schedules}
    assert {s["name"] for s in repository["sensors"]} == {s.name for s in defs.sensors}
    assert len(repository["sensors"]) >= 2 and checks  # not vacuous
