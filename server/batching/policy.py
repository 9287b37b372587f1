"""Pure batch-forming math for `batcher.py`: how many queued requests to send now, and why.

The batcher owns the queue and the clock; this module only decides. Policy (Triton's dynamic
batcher, made latency-first for an idle server):

1. **idle** — a request that arrives while a worker is free and nothing else is waiting is
   sent at once, alone. Waiting for company would only add latency: there is nobody to batch
   with, and at one client batching must cost nothing.
2. While every worker (`instances`) is busy, requests accumulate. When a worker frees (or a
   request arrives while a collection is under way) the queue is scanned in FIFO order, taking
   whole requests while their rows fit in `max_batch_size` (requests are never reordered, so
   nobody starves behind smaller ones):
   * **full** — the prefix reaches `max_batch_size` rows, or the next request no longer fits:
     waiting cannot make this batch bigger, so it goes now.
   * **preferred** — some prefix sums exactly to a `preferred_batch_sizes` entry: the largest
     such prefix goes now (those sizes are the ones the model is tuned for, as in Triton);
     later requests keep waiting.
   * **delay** — otherwise the batch waits until `max_queue_delay_ms` after the *oldest* queued
     request arrived (time it spent behind busy workers counts), then goes with what it has.
     New arrivals re-run the decision, so a batch that fills up early leaves early.
3. With batching disabled every dispatch is one request: **idle** when it found a free worker,
   otherwise **full** (a batch of one request is as full as it gets), with no delay.

Under load this forms batches out of the work that piled up during the previous run (large
batches, high throughput); at low load the idle rule keeps the per-request cost at zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from server.contract.manifest import BatchingPolicy

Reason = Literal["full", "preferred", "delay", "idle"]
REASONS: tuple[Reason, ...] = ("full", "preferred", "delay", "idle")


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """The parts of a `BatchingPolicy` the decision needs, in the units it uses."""

    enabled: bool
    max_batch_size: int
    preferred_sizes: frozenset[int]
    max_queue_delay_s: float

    @classmethod
    def from_policy(cls, policy: BatchingPolicy) -> BatchConfig:
        return cls(
            enabled=policy.enabled,
            max_batch_size=policy.max_batch_size,
            preferred_sizes=frozenset(policy.preferred_batch_sizes),
            max_queue_delay_s=policy.max_queue_delay_ms / 1000.0,
        )


class Decision(NamedTuple):
    """Send the first `take` queued requests now (`take` > 0), or wait until `wake_at`.

    A NamedTuple: one is made per decision, on the request path, where a frozen dataclass's
    `__init__` (an `object.__setattr__` per field) costs 1.6x as much."""

    take: int
    reason: Reason | None = None
    wake_at: float | None = None


def decide(
    queued_rows: Iterable[int],
    *,
    config: BatchConfig,
    oldest_enqueued_at: float,
    now: float,
    idle_arrival: bool,
) -> Decision:
    """Decide for a queue of requests (their row counts, oldest first) and one free worker.

    `queued_rows` must start with an entry of at most `config.max_batch_size` rows (admission
    splits or refuses larger requests); a later entry above it marks a request that cannot join
    this batch (the batcher uses that for shape mismatches). `idle_arrival` is true when the only
    queued request just arrived to a free worker.
    """
    if not config.enabled:
        return Decision(take=1, reason="idle" if idle_arrival else "full")

    limit = config.max_batch_size
    count = rows = 0
    preferred_count = 0
    overflow = False
    for request_rows in queued_rows:
        if rows + request_rows > limit:
            overflow = True
            break
        count += 1
        rows += request_rows
        if rows in config.preferred_sizes:
            preferred_count = count
        if rows == limit:
            # Nothing more fits; whatever follows is overflow if present.
            break
    if count == 0:
        raise ValueError("decide() needs at least one queued request that fits max_batch_size")

    if idle_arrival:
        return Decision(take=count, reason="idle")
    if overflow or rows == limit:
        return Decision(take=count, reason="full")
    if preferred_count:
        return Decision(take=preferred_count, reason="preferred")
    wake_at = oldest_enqueued_at + config.max_queue_delay_s
    if now >= wake_at:
        return Decision(take=count, reason="delay")
    return Decision(take=0, wake_at=wake_at)
