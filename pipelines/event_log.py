"""Dagster's SQLite event log for a local instance, with two fixes: a range's events written
in batches, and pool slots that steps of several processes cannot share.

**Batches.** A range run of a year plans and then materializes every day of every asset:
2,190 events for three assets. Dagster's SQLite event log opens an engine, commits and closes
it for each one (twice for an asset event: the run's file, then the cross-run index), and that
was 90 % of a year's rerun of unchanged days. Dagster hands such events to its storage as
batches (the planned events of a run, the partitions of one output) when
`DAGSTER_EVENT_BATCH_SIZE` is set; its PostgreSQL storage writes them at once, its SQLite
storage one by one. This one writes a batch's asset events in one transaction per file, each
row exactly as the stock storage writes it, and stores any other event as the stock storage
does. The variable is set when the storage is created, in every process that opens the
instance (CLI, daemon, webserver, run workers), unless it is set already.

**Pool slots.** Dagster claims a `camb_api` slot by selecting a free one and then updating it:
without SELECT ... FOR UPDATE in SQLite, steps of several processes starting at once took the
same slot. The claim here is one UPDATE.

`pipelines/dagster.yaml` selects it. PostgreSQL (`deploy/dagster.yaml`) has neither problem:
it keeps its connections, and claims a slot with SELECT ... FOR UPDATE SKIP LOCKED.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy
from dagster import EventLogEntry
from dagster._config import StringSource
from dagster._core.events import ASSET_EVENTS
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._serdes import ConfigurableClassData
from dagster._utils.concurrency import ConcurrencySlotStatus

from resources.error_kinds import OperatorError

BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"  # read by Dagster for every event
BATCH_SIZE = 1000


class LocalEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log, in the same files (`{dagster_home}/history/runs/`)."""

    def __init__(self, dagster_home: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(os.path.join(dagster_home, "history", "runs", ""), inst_data)
        self._dagster_home = dagster_home
        os.environ.setdefault(BATCH_SIZE_ENV, str(BATCH_SIZE))

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {"dagster_home": StringSource}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "LocalEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    def register_instance(self, instance) -> None:
        # `{env: DAGSTER_HOME}` names the home of the process, which is the instance's unless
        # someone opened another one by path: its events must not land in this home.
        if os.path.realpath(instance.root_directory) != os.path.realpath(self._dagster_home):
            raise OperatorError(
                f"the Dagster instance at {instance.root_directory} keeps its event log under "
                f"DAGSTER_HOME={self._dagster_home}",
                fix=f"export DAGSTER_HOME={instance.root_directory}",
                setting="DAGSTER_HOME",
            )
        super().register_instance(instance)

    def _claim_concurrency_slot(
        self, concurrency_key: str, run_id: str, step_key: str
    ) -> ConcurrencySlotStatus:
        # Dagster selects a free slot, then updates that row by id: SQLite has no SELECT ...
        # FOR UPDATE, so steps of several processes starting at once took the same slot (six
        # steps held a pool of two). One UPDATE that finds and re-checks the free slot holds
        # SQLite's write lock from start to end.
        slots = ConcurrencySlotsTable.c
        free = (
            sqlalchemy.select(slots.id)
            .where(
                slots.concurrency_key == concurrency_key,
                slots.step_key.is_(None),
                slots.deleted.is_(False),
            )
            .limit(1)
            .scalar_subquery()
        )
        claim = (
            ConcurrencySlotsTable.update()
            .values(run_id=run_id, step_key=step_key)
            .where(slots.id == free, slots.step_key.is_(None))
        )
        with self.index_connection() as conn:
            claimed = conn.execute(claim).rowcount
        return ConcurrencySlotStatus.CLAIMED if claimed else ConcurrencySlotStatus.BLOCKED

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        asset_events = [e for e in events if is_asset_event(e)]
        runs = {e.run_id for e in asset_events}
        if len(asset_events) < 2 or len(runs) != 1:
            super().store_event_batch(events)  # one by one
            return
        statements = [self.prepare_insert_event(e) for e in asset_events]
        with self.run_connection(runs.pop()) as conn:
            for statement in statements:
                conn.execute(statement)
        with self.index_transaction() as conn:  # mirrored as `store_event` mirrors one
            for event, statement in zip(asset_events, statements, strict=True):
                event_id = conn.execute(statement).inserted_primary_key[0]
                self._store_asset_event_tags(conn, [event], [event_id])
                self._store_asset_event(conn, event, event_id)
        for event in events:
            if not is_asset_event(event):
                self.store_event(event)


def is_asset_event(event: EventLogEntry) -> bool:
    """An event that `SqliteEventLogStorage.store_event` mirrors into its index as an asset's."""
    return event.is_dagster_event and event.get_dagster_event().event_type in ASSET_EVENTS
