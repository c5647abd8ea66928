"""What the deployment's environment chooses when the code location loads."""

import pytest
from dagster import BackfillPolicy

from assets.sound_files import sound_files
from pipelines.deployment import backfill_policy_from_env, executor_from_env, with_backfill_policy


def test_backfills_run_the_whole_range_unless_told_how_many_days_a_run_takes(monkeypatch):
    monkeypatch.delenv("SOUNDHARVEST_BACKFILL_DAYS_PER_RUN", raising=False)
    assert backfill_policy_from_env() == BackfillPolicy.single_run()

    monkeypatch.setenv("SOUNDHARVEST_BACKFILL_DAYS_PER_RUN", "7")
    [asset] = with_backfill_policy([sound_files])
    assert asset.backfill_policy == BackfillPolicy.multi_run(7)
    assert asset.op.pool == "camb_api"  # the pool survives the new policy

    monkeypatch.setenv("SOUNDHARVEST_BACKFILL_DAYS_PER_RUN", "a week")
    with pytest.raises(ValueError, match="SOUNDHARVEST_BACKFILL_DAYS_PER_RUN='a week'"):
        backfill_policy_from_env()


def test_the_executor_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SOUNDHARVEST_EXECUTOR", raising=False)
    assert executor_from_env().name == "in_process"
    monkeypatch.setenv("SOUNDHARVEST_EXECUTOR", "celery")
    assert executor_from_env().name == "celery"
    monkeypatch.setenv("SOUNDHARVEST_EXECUTOR", "k8s")
    with pytest.raises(ValueError, match="expected in_process or celery"):
        executor_from_env()
