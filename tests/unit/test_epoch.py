"""ysync.epoch: when the marker says that Redis lost its data (pure)."""

from __future__ import annotations

from ysync.epoch import MarkerState, epoch_key, judge_marker


def test_the_marker_this_process_adopted_is_intact() -> None:
    assert judge_marker(b"token", b"token") is MarkerState.INTACT
    assert not MarkerState.INTACT.lost_data


def test_a_missing_marker_means_redis_lost_its_data() -> None:
    assert judge_marker(b"token", None) is MarkerState.GONE
    assert MarkerState.GONE.lost_data


def test_another_token_means_redis_lost_its_data_and_someone_wrote_the_marker_again() -> None:
    assert judge_marker(b"token", b"other") is MarkerState.REPLACED
    assert judge_marker(b"token", b"") is MarkerState.REPLACED
    assert MarkerState.REPLACED.lost_data


def test_the_marker_key_is_outside_y_redis_names() -> None:
    key = epoch_key("y")
    assert key == "y:ysync:epoch"
    assert ":room:" not in key and key != "y:worker"
