"""The two control laws the queueing-delay controller (:mod:`.overload`) applies to its
signals: CoDel's test (:class:`Above`: has every sample stayed at or above a threshold for
a whole interval?) and PIE's update of the fraction refused (:func:`pie_step`, RFC 8033).
Pure arithmetic, no clock of their own."""

from __future__ import annotations

__all__ = ["PIE_ALPHA", "PIE_BETA", "PIE_DECAY", "PIE_FLOOR", "Above", "pie_step"]

#: PIE's gains (RFC 8033, 4.2: per second of delay, per update)
PIE_ALPHA = 0.125
PIE_BETA = 1.25
#: the fraction decays by this factor an update while the delay stays under half the target
PIE_DECAY = 0.98
#: under this, a decaying fraction is 0 (shedding stops)
PIE_FLOOR = 0.001
#: RFC 8033's auto-tuning: while the fraction is under the bound, the gains are divided
_PIE_SCALE = (
    (0.000001, 2048.0),
    (0.00001, 512.0),
    (0.0001, 128.0),
    (0.001, 32.0),
    (0.01, 8.0),
    (0.1, 2.0),
)


def pie_step(fraction: float, delay_s: float, previous_s: float, target_s: float) -> float:
    """PIE's control law (RFC 8033, 4.2): the fraction after one update, in [0, 1], from
    this update's and the previous update's delay (seconds)."""
    alpha, beta = PIE_ALPHA, PIE_BETA
    for bound, divisor in _PIE_SCALE:
        if fraction < bound:
            alpha, beta = alpha / divisor, beta / divisor
            break
    fraction += alpha * (delay_s - target_s) + beta * (delay_s - previous_s)
    if delay_s < target_s / 2 and previous_s < target_s / 2:
        fraction *= PIE_DECAY
        if fraction < PIE_FLOOR:
            fraction = 0.0
    return min(max(fraction, 0.0), 1.0)


class Above:
    """CoDel's test for one threshold: has every sample stayed at or above it for at least
    ``interval`` (since the first sample of the current run above it)?"""

    __slots__ = ("interval", "since", "threshold")

    def __init__(self, threshold: float, interval: float) -> None:
        self.threshold = threshold
        self.interval = interval
        #: when the current run of samples at or above the threshold began; None: no run
        self.since: float | None = None

    def observe(self, delay: float, now: float) -> bool:
        if delay < self.threshold:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        return now - self.since >= self.interval
