"""Quality features against clips whose figures are known by construction."""

import contextlib
import math

import numpy as np
import pandas as pd
import psutil
import pyloudnorm
import pytest

from assets.ml.clip_features import (
    FeatureParams,
    Item,
    day_features,
    feature_row,
    feature_workers,
    measure,
    measure_all,
)

from support.ml_clips import noise, sine, square, write_wav

PARAMS = FeatureParams()


def figures(tmp_path, signal, rate, subtype="PCM_24", params=PARAMS, **kwargs):
    return measure(str(write_wav(tmp_path / "clip.wav", signal, rate, subtype)), params, **kwargs)


def test_a_full_scale_square_wave_clips_everywhere(tmp_path):
    got = figures(tmp_path, square(1.0, 16000), 16000, subtype="PCM_16")
    assert got["clipped_fraction"] == 1.0
    assert got["peak_dbfs"] == pytest.approx(0, abs=0.001)
    assert got["rms_dbfs"] == pytest.approx(0, abs=0.001)
    assert got["silence_fraction"] == 0 and not got["is_silent"]


def test_a_sine_of_known_amplitude_has_its_rms_and_peak_and_does_not_clip(tmp_path):
    # 1 kHz at 48 kHz for 1 s: whole periods, so the RMS is amplitude / sqrt(2) exactly.
    got = figures(tmp_path, sine(1.0, 48000, 0.5), 48000)
    assert got["rms_dbfs"] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.001)
    assert got["peak_dbfs"] == pytest.approx(20 * math.log10(0.5), abs=0.001)
    assert got["clipped_fraction"] == 0


def test_silence_padding_of_known_length(tmp_path):
    rate = 16000  # 10 ms windows of 160 frames: 0.5 s and 0.25 s are whole windows
    signal = np.concatenate([np.zeros(8000), sine(1.0, rate, 0.5, 440), np.zeros(4000)])
    got = figures(tmp_path, signal, rate)
    assert got["leading_silence_s"] == pytest.approx(0.5)
    assert got["trailing_silence_s"] == pytest.approx(0.25)
    assert got["silence_fraction"] == pytest.approx(0.75 / 1.75)
    assert not got["is_silent"]


def test_digital_silence_is_silent_with_no_level_and_no_loudness(tmp_path):
    got = figures(tmp_path, np.zeros((24000, 2)), 16000)
    assert got["is_silent"] and got["silence_fraction"] == 1.0
    assert got["leading_silence_s"] == got["trailing_silence_s"] == 1.5
    assert got["peak_dbfs"] == got["rms_dbfs"] == got["lufs"] == -math.inf


def test_a_clip_shorter_than_one_gating_block_has_no_loudness(tmp_path):
    got = figures(tmp_path, sine(0.3, 16000, 0.5), 16000)
    assert got["lufs"] is None
    assert got["rms_dbfs"] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)


def ebu_3341(levels_dbfs_and_seconds, rate=48000):
    """EBU Tech 3341's loudness test signals: stereo 1 kHz sines at given levels in a row."""
    parts = [sine(s, rate, 10 ** (level / 20)) for level, s in levels_dbfs_and_seconds]
    mono = np.concatenate(parts)
    return np.stack([mono, mono], axis=1)


# EBU Tech 3341 cases 1-5 (1 and 2 shortened: a steady sine's loudness does not depend on
# its length): each must read -23.0 (case 2: -33.0) LUFS within +-0.1 LU; 3 and 4 exercise
# both gates, 5 a mix the relative gate keeps whole.
EBU_CASES = {
    "1: -23 dBFS": ([(-23, 5)], -23.0),
    "2: -33 dBFS": ([(-33, 5)], -33.0),
    "3: relative gate": ([(-36, 10), (-23, 60), (-36, 10)], -23.0),
    "4: both gates": ([(-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)], -23.0),
    "5: within the gate": ([(-26, 20), (-20, 20.1), (-26, 20)], -23.0),
}


@pytest.mark.parametrize("case", EBU_CASES)
def test_loudness_of_the_ebu_reference_signals(tmp_path, case):
    parts, expected = EBU_CASES[case]
    signal = ebu_3341(parts)
    got = figures(tmp_path, signal, 48000, subtype="FLOAT")
    assert got["lufs"] == pytest.approx(expected, abs=0.1)
    # ... and the library's own whole-array answer for the very same samples.
    assert got["lufs"] == pytest.approx(
        pyloudnorm.Meter(48000).integrated_loudness(signal), abs=0.01
    )


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (22050, 1), (48000, 5)])
def test_streamed_loudness_equals_pyloudnorm_on_the_whole_array_for_any_block_size(
    tmp_path, rate, channels
):
    # Noise bursts, a quiet stretch and near-silence: both gates drop blocks.
    signal = np.concatenate(
        [
            noise(2.0, rate, 0.2, 1, channels),
            noise(1.0, rate, 0.002, 2, channels),
            noise(1.5, rate, 0.05, 3, channels),
            noise(0.5, rate, 1e-5, 4, channels),
        ]
    )
    path = str(write_wav(tmp_path / "clip.wav", signal, rate, "FLOAT"))
    reference = pyloudnorm.Meter(rate).integrated_loudness(signal.astype("float32"))
    results = [measure(path, PARAMS, block_frames=n) for n in (1000, 4801, 65536)]
    for got in results:
        assert got["lufs"] == pytest.approx(reference, abs=0.01)
        for name, value in results[0].items():
            if isinstance(value, bytes):  # the fingerprint: the same bytes, block by block
                assert got[name] == value, name
            else:
                assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_thresholds_change_the_figures(tmp_path):
    signal = np.concatenate([np.zeros(8000), sine(1.0, 16000, 0.01, 440)])  # -43 dBFS peak
    path = str(write_wav(tmp_path / "clip.wav", signal, 16000))
    default = measure(path, PARAMS)
    strict = measure(path, FeatureParams(silence_threshold_dbfs=-40.0, clip_threshold_dbfs=-50))
    assert default["silence_fraction"] == pytest.approx(8000 / 24000)
    assert strict["is_silent"] and strict["clipped_fraction"] == pytest.approx(
        np.mean(np.abs(np.round(signal * 32767) / 32768) >= 10 ** (-50 / 20)), abs=1e-3
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("silence_threshold_dbfs", 3.0), ("silence_window_ms", 0.0), ("clip_threshold_dbfs", 1.0)],
)
def test_impossible_thresholds_name_their_field(field, value):
    with pytest.raises(ValueError, match=field):
        FeatureParams(**{field: value})


def test_an_undecodable_or_missing_file_gets_a_row_with_an_error(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(64))
    rows = [
        feature_row(Item(1, "a" * 64, str(bad)), PARAMS, "sound_features"),
        feature_row(Item(2, "b" * 64, str(tmp_path / "gone.wav")), PARAMS, "sound_features"),
    ]
    assert rows[0]["error"].startswith("cannot decode") and rows[0]["lufs"] is None
    assert rows[1]["error"] == "stored file is missing"
    assert all(row.get("peak_dbfs") is None for row in rows)


def items(tmp_path, count):
    return [
        Item(
            run_id,
            f"{run_id:064d}",
            str(write_wav(tmp_path / f"{run_id}.wav", noise(0.6, 16000, 0.1, run_id), 16000)),
        )
        for run_id in range(1, count + 1)
    ]


def test_a_process_pool_gives_exactly_what_one_process_gives(tmp_path):
    work = items(tmp_path, 6)
    inline = list(measure_all(work, PARAMS, computed_by="x"))
    with feature_workers(2) as pool:
        pooled = list(measure_all(work, PARAMS, computed_by="x", pool=pool))
    strip = ["computed_at"]
    assert [r["run_id"] for r in pooled] == [1, 2, 3, 4, 5, 6]
    assert pd.DataFrame(pooled).drop(columns=strip).equals(pd.DataFrame(inline).drop(columns=strip))


def feature_worker_processes() -> list[psutil.Process]:
    """The pool's workers: the children of this process's fork server."""
    servers = [
        child
        for child in psutil.Process().children()
        if "multiprocessing.forkserver" in " ".join(child.cmdline())
    ]
    return [worker for server in servers for worker in server.children()]


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("ending", ["done", "failed"])
def test_the_feature_workers_end_with_their_block(tmp_path, ending):
    """A run process exits only once its worker processes have: workers kept for the life of
    the process held every run worker of the daemon at its exit (docs/ml.md, the pool)."""
    work = items(tmp_path, 6)
    with contextlib.suppress(RuntimeError), feature_workers(2) as pool:
        assert len(list(measure_all(work, PARAMS, computed_by="x", pool=pool))) == 6
        workers = feature_worker_processes()
        assert len(workers) == 2
        if ending == "failed":
            raise RuntimeError("the step failed")
    assert all(gone(worker) for worker in workers)


def catalog_ok(work):
    return pd.DataFrame(
        {
            "run_id": [i.run_id for i in work],
            "sha256": [i.sha256 for i in work],
            "uri": [i.uri for i in work],
            "size_bytes": [1000] * len(work),
        }
    )


def test_a_rerun_measures_only_new_files_and_changed_thresholds(tmp_path):
    work = items(tmp_path, 4)
    first = day_features(catalog_ok(work[:3]), None, None, PARAMS)
    assert (first.computed, first.kept) == (3, 0)

    # Run 2's file changed (new sha256), run 4 is new: only those two are read.
    changed = [work[0], Item(2, "c" * 64, work[1].uri), work[2], work[3]]
    second = day_features(catalog_ok(changed), first.rows, None, PARAMS)
    assert (second.computed, second.kept) == (2, 2)
    assert list(second.rows["run_id"]) == [1, 2, 3, 4]
    assert second.rows.set_index("run_id").loc[2, "sha256"] == "c" * 64

    # Other thresholds: every row is measured again, with its params recorded.
    other = FeatureParams(silence_threshold_dbfs=-50.0)
    third = day_features(catalog_ok(changed), second.rows, None, other)
    assert third.computed == 4 and set(third.rows["params"]) == {other.key()}


def test_rows_computed_at_harvest_time_are_taken_and_errors_tried_again(tmp_path):
    work = items(tmp_path, 3)
    harvested = pd.DataFrame(list(measure_all(work[:2], PARAMS, computed_by="harvest")))
    earlier = harvested.iloc[:0]
    broken = pd.DataFrame([{**harvested.iloc[1].to_dict(), "error": "cannot decode: x"}])
    result = day_features(catalog_ok(work), pd.concat([earlier, broken]), harvested, PARAMS)
    assert (result.from_harvest, result.computed, result.kept) == (2, 1, 0)
    by_run = result.rows.set_index("run_id")["computed_by"]
    assert by_run.to_dict() == {1: "harvest", 2: "harvest", 3: "sound_features"}
