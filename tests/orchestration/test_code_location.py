"""Every definition loads in one test: the code location of `workspace.yaml`, as the daemon,
the webserver and `dg dev` load it, with the names users and an instance's history know."""

import pytest
import yaml
from dagster import DagsterInstance, Definitions
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.code_location import InProcessCodeLocation
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from pipelines.definitions import defs

from support import PROJECT

# What users and an instance's history know by name (run history, partitions and sensor
# cursors carry over only while these stay): asset -> (group, kinds, upstream, partitioned).
ASSETS = {
    "sound_generations": ("generation", {"parquet"}, set(), True),
    "run_manifest": ("harvest", {"parquet"}, {"sound_generations"}, True),
    "sound_files": ("harvest", {"wav"}, {"run_manifest"}, True),
    "sound_catalog": ("harvest", {"parquet"}, {"sound_files"}, True),
    "sound_features": ("ml", {"parquet"}, {"sound_catalog"}, True),
    "ml_dataset": ("ml", {"json", "parquet"}, {"sound_catalog", "sound_features"}, False),
}
CHECKS = {
    ("sound_generations", "generations_in_doubt"),
    ("run_manifest", "manifest_present"),
    ("sound_catalog", "one_row_per_manifest_row"),
    ("sound_catalog", "catalog_contract"),
    ("sound_catalog", "ok_files_exist"),
    ("sound_catalog", "no_pending_runs"),
    ("sound_catalog", "freshness_check"),  # pipelines/freshness.py
    ("ml_dataset", "split_shares"),
}
SENSORS = {
    "manifest_sensor",
    "prompt_sensor",
    "pending_sweep",
    "ml_feed_automation",
    "freshness_checks_sensor",
}


# Dagster's own snapshot code reads a deprecated property of every schedule.
@pytest.mark.filterwarnings("ignore:Property `ScheduleDefinition.environment_vars`")
def test_the_code_location_loads_every_definition_as_its_code_server_does():
    """workspace.yaml's code location, loaded in process through the code path of Dagster's
    code server (import, then the snapshot the daemon and the UI read): every asset, check,
    job, schedule, sensor and resource, under the names users and run history know."""
    Definitions.validate_loadable(defs)  # resources bound, names unique, jobs resolvable
    [entry] = yaml.safe_load((PROJECT / "workspace.yaml").read_text())["load_from"]
    module = entry["python_module"]
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            module_name=module["module_name"],
            working_directory=str(PROJECT / module["working_directory"]),
        ),
        location_name=module["location_name"],
    )
    with (
        DagsterInstance.ephemeral() as instance,
        InProcessCodeLocation(origin, instance=instance) as location,
    ):
        [repository] = location.get_repositories().values()
        nodes = {n.asset_key.to_user_string(): n for n in repository.get_asset_node_snaps()}
        check_nodes = repository.get_asset_check_node_snaps()
        jobs = {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")}
        harvest = {
            key.to_user_string() for key in repository.get_asset_keys_in_job("daily_harvest")
        }
        schedules = {(s.name, s.cron_schedule, s.job_name) for s in repository.get_schedules()}
        sensors = {sensor.name for sensor in repository.get_sensors()}
        resources = {r.name: r.resource_type.rsplit(".", 1)[-1] for r in repository.get_resources()}

    assert location.name == "soundharvest"
    described = {
        key: (
            node.group_name,
            {tag.removeprefix("dagster/kind/") for tag in node.tags or {} if "/kind/" in tag},
            {edge.parent_asset_key.to_user_string() for edge in node.parent_edges},
            node.partitions is not None,
        )
        for key, node in nodes.items()
    }
    assert described == ASSETS
    # deploy/dagster.yaml limits this pool: the steps that call the API share it
    assert nodes["sound_files"].pools == nodes["sound_generations"].pools == {"camb_api"}
    assert {(c.asset_key.to_user_string(), c.name) for c in check_nodes} == CHECKS
    assert jobs == {"daily_harvest"}
    assert harvest == {"sound_generations", "run_manifest", "sound_files", "sound_catalog"}
    assert schedules == {("daily_harvest_schedule", "0 1 * * *", "daily_harvest")}
    assert sensors == SENSORS
    assert resources == {"camb": "CambResource", "storage": "StorageResource"}
