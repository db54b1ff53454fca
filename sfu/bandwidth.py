"""How much a subscriber's link can take, and what a publisher may send: sans-I/O estimates.

Congestion feedback is REMB plus RTCP receiver-report loss (not transport-wide congestion
control): aiortc — our SFU and our CLI — implements REMB on both ends (a receive-side,
delay-based estimator fed by the abs-send-time extension the forwarder writes) and no TWCC,
and Chromium still sends REMB when transport-cc is not negotiated. The SFU never estimates
from its own send timestamps; it trusts what the receiver measured, and its own send rate.

:class:`DownlinkEstimate` (one per subscriber) turns that feedback into a *budget* for the
layer allocation (:mod:`sfu.layers`):

* A REMB well below what the SFU sends (the receiver's delay-based estimator saw queues
  grow), or heavy loss in a receiver report, is *congestion*: the estimate drops to it.
  Moderate random loss is not (Wi-Fi loses packets without being full; NACKs repair those).
* A REMB at or above the send rate raises the estimate to it. A receive-side estimate never
  goes much past 1.5× what arrives, though, and simulcast layers are steps (~150 kbit/s,
  ~500 kbit/s, ~1.5 Mbit/s), so the next step up is reached by a *trial*: the allocation
  spends a higher budget for a few seconds; without congestion the estimate keeps it, with
  congestion it falls back and the next trial waits twice as long (up to a minute), so a
  capped link is probed rarely.

:class:`UplinkEstimate` (one per publisher) is what the SFU announces back in REMB: a
loss-based estimate (GoogCC's rules) over what arrived, so a browser's encoder ramps up (and
turns on its higher simulcast layers) on a clean link and a CLI's encoder backs off on a
lossy, narrow one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BandwidthConfig", "DownlinkEstimate", "UplinkEstimate"]


@dataclass(frozen=True, slots=True)
class BandwidthConfig:
    # What a subscriber is assumed to take before any feedback (a typical home link's
    # share for a call, as browsers start at ~300 kbit/s per stream).
    initial_bps: float = 1_500_000
    floor_bps: float = 100_000  # an estimate never goes below this (audio and one low layer)
    remb_overuse: float = 0.85  # REMB below this × the send rate: the receiver is congested
    loss_congested: float = 0.2  # RR fraction lost above this: congested (random loss is not)
    trial_seconds: float = 3.0  # how long a higher budget must hold to be kept
    trial_first: float = 2.0  # the first trial, this long after joining
    trial_next: float = 1.0  # after a trial held: the next step up soon
    trial_backoff: float = 8.0  # after congestion; doubles on each failed trial ...
    trial_backoff_max: float = 60.0  # ... up to this
    quiet_before_trial: float = 3.0  # no congestion for this long before trying higher
    # Uplink (publishers): GoogCC's loss-based rules over what arrived.
    publish_start_bps: float = 2_500_000  # announced until the first report interval
    publish_max_bps: float = 3_000_000
    publish_min_bps: float = 150_000
    loss_low: float = 0.02
    loss_high: float = 0.1


class DownlinkEstimate:
    """One subscriber's downlink: feedback in, a budget (bit/s) for the allocation out."""

    __slots__ = (
        "_backoff",
        "_config",
        "_next_trial_at",
        "_trial_budget",
        "_trial_until",
        "congested_at",
        "estimate",
        "failed_trials",
        "remb",
    )

    def __init__(self, config: BandwidthConfig, now: float) -> None:
        self._config = config
        self.estimate: float | None = None  # None: no feedback yet
        self.remb: float | None = None
        self.congested_at = -1e9
        self._backoff = config.trial_backoff
        self._next_trial_at = now + config.trial_first
        self._trial_until: float | None = None
        self._trial_budget = 0.0
        self.failed_trials = 0

    def budget(self, now: float) -> float:
        """What the allocation may spend now (a trial's budget while one runs)."""
        self._settle_trial(now)
        base = self.estimate if self.estimate is not None else self._config.initial_bps
        if self._trial_until is not None:
            return max(base, self._trial_budget)
        return base

    @property
    def in_trial(self) -> bool:
        return self._trial_until is not None

    def can_trial(self, now: float) -> bool:
        self._settle_trial(now)
        return (
            self._trial_until is None
            and now >= self._next_trial_at
            and now - self.congested_at >= self._config.quiet_before_trial
        )

    def start_trial(self, budget: float, now: float) -> None:
        """Spend ``budget`` for a while; keep it if no congestion is reported meanwhile."""
        self._trial_until = now + self._config.trial_seconds
        self._trial_budget = budget

    def on_remb(self, bps: float, send_bps: float, now: float) -> None:
        """The subscriber's REMB; ``send_bps`` is what the SFU sent it lately."""
        self.remb = bps
        if send_bps > 0 and bps < self._config.remb_overuse * send_bps:
            self._congested(bps, now)
        else:  # room to spare: only ever raises (a receiver's estimate trails what it gets)
            self.estimate = max(
                bps, self._config.initial_bps if self.estimate is None else self.estimate
            )

    def on_loss(self, fraction: float, send_bps: float, now: float) -> None:
        """The worst fraction lost in the subscriber's latest receiver report (0.0-1.0)."""
        if fraction > self._config.loss_congested and send_bps > 0:
            self._congested(send_bps * (1 - fraction / 2), now)

    def _congested(self, bps: float, now: float) -> None:
        cfg = self._config
        value = max(cfg.floor_bps, bps)
        self.estimate = value if self.estimate is None else min(self.estimate, value)
        self.congested_at = now
        if self._trial_until is not None:  # the higher budget did not hold: back off
            self._trial_until = None
            self.failed_trials += 1
            self._backoff = min(self._backoff * 2, cfg.trial_backoff_max)
        self._next_trial_at = now + self._backoff

    def _settle_trial(self, now: float) -> None:
        if self._trial_until is None or now < self._trial_until:
            return
        self._trial_until = None  # held: keep it
        self.estimate = max(self.estimate or 0.0, self._trial_budget)
        self._backoff = self._config.trial_backoff
        self._next_trial_at = now + self._config.trial_next


class UplinkEstimate:
    """What to announce to one publisher in REMB, from the loss of what it sent us."""

    __slots__ = ("_config", "estimate")

    def __init__(self, config: BandwidthConfig) -> None:
        self._config = config
        self.estimate = config.publish_start_bps

    def on_interval(self, fraction_lost: float, received_bps: float) -> float:
        """One report interval: ``fraction_lost`` of the publisher's packets, at
        ``received_bps``. Returns the new estimate."""
        cfg = self._config
        if received_bps <= 0:
            return self.estimate  # nothing sent (muted, camera off): nothing learnt
        if fraction_lost > cfg.loss_high:
            value = received_bps * (1 - fraction_lost / 2)
            self.estimate = min(self.estimate, value)
        elif fraction_lost < cfg.loss_low:
            self.estimate = max(self.estimate, received_bps * 1.08)
        self.estimate = min(cfg.publish_max_bps, max(cfg.publish_min_bps, self.estimate))
        return self.estimate
