"""Pure pieces of holding up on lossy networks (issue 13): freeze counting in ``--stats``,
the SFU's packet history and NACK handling. No network, no processes."""

from __future__ import annotations

from client.call.stats import PeerStats


def test_a_gap_over_three_frame_intervals_is_one_freeze() -> None:
    stats = PeerStats(b"m", "Bob", "fp")
    at = 0.0
    for _ in range(30):  # 15 fps
        at += 1 / 15
        stats.video_frame_at(at)
    assert stats.video_freezes == 0
    at += 0.5  # half a second without a picture
    stats.video_frame_at(at)
    for _ in range(10):
        at += 1 / 15
        stats.video_frame_at(at)
    assert stats.video_freezes == 1
    assert 499 < stats.video_freeze_ms < 501
    assert stats.to_json()["video_freezes"] == 1


def test_a_slightly_late_frame_is_no_freeze() -> None:
    stats = PeerStats(b"m", "Bob", "fp")
    for i in range(30):
        stats.video_frame_at(i / 15 + (0.1 if i == 20 else 0.0))  # 100 ms late once
    assert stats.video_freezes == 0
