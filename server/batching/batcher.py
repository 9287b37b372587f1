"""The dynamic batcher of one model version: admit -> queue -> collect -> dispatch -> fan out.

Request path: `ServedVersion.infer` -> `Batcher.submit` -> `runtime/executor.py`. Everything
here runs on the event loop and is callback-driven: there is no collector task. A request
that finds a free worker and an empty queue is dispatched on the next loop turn, with whatever
arrived in this one (the idle pump), or, when its transport knows it is the only request in the
server (`InferenceRequest.alone`: one client), inside `submit` itself; otherwise it waits in a
deque, and the queue is re-examined when a batch finishes, when a request arrives, and when the
delay timer fires. `policy.py` makes each decision (see its docstring
for the rules and the `full` / `preferred` / `delay` / `idle` reasons). Once `close()` has
stopped admission no request can join a partial batch, so it leaves at once (`delay`).

Per request the hot path costs one future, one deque append/pop, and (only with a deadline)
one timer handle; no task, no log line. A batch of a size the model has proven cheap for runs
inline on the loop (`RuntimeExecutor.cheap`) and is handed out at once; other batches' results
come back through one `call_soon_threadsafe` per batch. Either way each caller gets a row slice
of the batch outputs, then the batch's inputs and outputs go to the optional `on_batch` observer
(the drift sampler).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from server.batching.pending import PendingRequest
from server.batching.policy import REASONS, BatchConfig, Reason, decide
from server.contract.manifest import ModelManifest
from server.errors import (
    DeadlineExceeded,
    HotserveError,
    InferenceFailed,
    InvalidInput,
    ModelNotReady,
    Overloaded,
)
from server.metrics.instruments import Metrics
from server.request import InferenceRequest, Tensors
from server.runtime.executor import RuntimeExecutor

log = logging.getLogger(__name__)

ShapeKey = tuple[tuple[int, ...], ...]
BatchObserver = Callable[[Tensors, Tensors], None]
"""Called on the loop with (inputs, outputs) of every batch that ran cleanly (drift sampling)."""


def _queued_of(batcher: Batcher | None) -> int:
    return 0 if batcher is None else batcher.queued


class Batcher:
    """Queues one version's requests and runs them in batches on its executor."""

    def __init__(
        self,
        manifest: ModelManifest,
        executor: RuntimeExecutor,
        metrics: Metrics,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.name = manifest.name
        self._on_batch = on_batch
        self.version = manifest.version
        policy = manifest.batching
        self._config = BatchConfig.from_policy(policy)
        self._max_batch_size = policy.max_batch_size
        self._max_queue_size = policy.max_queue_size
        self._allow_split = policy.allow_split
        self._executor = executor
        self._instances = executor.instances
        self._input_names = [spec.name for spec in manifest.inputs]
        # Requests can only share a batch if their non-batch dims agree; that is only in
        # doubt when the manifest leaves some of them dynamic.
        self._ragged = any(-1 in spec.shape[1:] for spec in manifest.inputs)
        # Without a batch axis a request is one whole run: its outputs have no rows to count.
        self._batch_axis = policy.batch_axis

        self._queue: deque[PendingRequest] = deque()
        self._queued = 0
        """Entries in `_queue` still marked queued (the deque also holds lazily removed ones)."""
        self._running = 0
        self._busy_s = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._idle_pump_scheduled = False
        self._drained: asyncio.Event | None = None

        labels = (self.name, str(self.version))
        self._m_queue_duration = metrics.queue_duration.labels(*labels)
        self._m_inference_duration = metrics.inference_duration.labels(*labels)
        self._m_batch_size = metrics.batch_size.labels(*labels)
        # Read at scrape time (no lock per request); weakly, so the gauge never keeps an
        # unloaded version's batcher alive (it then reads 0).
        this = weakref.ref(self)
        metrics.queue_depth.labels(*labels).set_function(lambda: _queued_of(this()))
        self._m_batches = {reason: metrics.batches.labels(*labels, reason) for reason in REASONS}

    # --- admission -------------------------------------------------------------

    async def submit(self, request: InferenceRequest) -> Tensors:
        """Run the request's rows in some batch and return every output, only these rows.

        The request never runs after its `deadline` (an absolute `time.monotonic()`).
        """
        if request.rows > self._max_batch_size and self._allow_split and not self._closing:
            return await self._submit_split(request)
        entry = self._admit(request, request.alone)
        try:
            return await entry.future  # an entry dispatched inline is answered: no suspension
        except asyncio.CancelledError:
            self._leave(entry)
            raise

    def submit_nowait(self, request: InferenceRequest) -> asyncio.Future[Tensors]:
        """`submit` for a caller that will not await it (shadow copies): the future of the
        request's outputs. Raises at once what admission refuses, including a request over
        `max_batch_size` (only `submit` splits). Cancelling the future withdraws the request."""
        return self._admit(request).future

    def _admit(self, request: InferenceRequest, alone: bool = False) -> PendingRequest:
        if self._closing:
            raise ModelNotReady(f"model {self.name!r} version {self.version} is shutting down")
        rows = request.rows
        if rows < 1:
            raise InvalidInput(field="inputs", expected="at least 1 row", got=f"{rows} rows")
        if rows > self._max_batch_size:
            raise InvalidInput(
                field="inputs", expected=f"at most {self._max_batch_size} rows (max_batch_size)", got=f"{rows} rows"
            )
        if self._queued >= self._max_queue_size:
            raise Overloaded(self.name, self.version, self._max_queue_size)
        return self._enqueue(request, time.monotonic(), alone)

    async def _submit_split(self, request: InferenceRequest) -> Tensors:
        """Queue an oversized request as in-order chunks of `max_batch_size` rows, then reassemble."""
        size, rows = self._max_batch_size, request.rows
        starts = range(0, rows, size)
        if self._queued + len(starts) > self._max_queue_size:
            raise Overloaded(self.name, self.version, self._max_queue_size)
        now = time.monotonic()
        entries = [
            self._enqueue(
                request.with_inputs(
                    {name: array[start : start + size] for name, array in request.inputs.items()},
                    min(size, rows - start),
                ),
                now,
            )
            for start in starts
        ]
        try:
            parts = [await entry.future for entry in entries]
        except BaseException:
            for entry in entries:
                self._leave(entry)
                if entry.future.done() and not entry.future.cancelled():
                    entry.future.exception()  # retrieved: one chunk's error is the answer
                entry.future.cancel()
            raise
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _enqueue(self, request: InferenceRequest, now: float, alone: bool = False) -> PendingRequest:
        deadline = request.deadline
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded(0.0)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        entry = PendingRequest(request, loop.create_future(), now)
        idle_arrival = self._queued == 0 and self._running < self._instances
        self._queue.append(entry)
        self._queued += 1
        if idle_arrival and alone:
            # Nobody can join it in this turn (the transport has no other request): dispatched
            # now, so a batch cheap enough runs inline and its caller's `await` does not suspend:
            # no loop turn for the pump, none for the caller's wake-up, no deadline timer. Its
            # observer runs after the caller's answer (`observe_later`).
            self._dispatch(1, "idle", now, observe_later=True)
        elif idle_arrival:
            # Dispatch on the next loop turn, not inline: requests whose bytes arrived in
            # the same turn (their handlers run before it) join this batch. One client pays
            # one loop turn; under load the loop stops paying a thread hop per request.
            if not self._idle_pump_scheduled:
                self._idle_pump_scheduled = True
                loop.call_soon(self._pump_idle)
        elif not self._idle_pump_scheduled:
            self._pump()
        # else: the idle pump due later in this turn decides for everyone queued before it (under
        # load, a decision per arrival was a scan of the queue each: quadratic in a turn's arrivals)
        if entry.queued:
            if deadline is not None:
                entry.timer = loop.call_later(deadline - now, self._expire, entry)
        return entry

    def _leave(self, entry: PendingRequest) -> None:
        """Take an entry out of the queue count (it stays in the deque until popped)."""
        if not entry.queued:
            return
        entry.queued = False
        self._queued -= 1
        if entry.timer is not None:
            entry.timer.cancel()
        self._check_drained()

    def _expire(self, entry: PendingRequest) -> None:
        if entry.queued and not entry.future.done():
            assert entry.deadline is not None
            entry.future.set_exception(DeadlineExceeded(entry.deadline - entry.enqueued_at))
        self._leave(entry)

    # --- collect ---------------------------------------------------------------

    def _pump_idle(self) -> None:
        self._idle_pump_scheduled = False
        self._pump(idle_arrival=True)

    def _pump(self, idle_arrival: bool = False, not_before: float = 0.0) -> None:
        """Dispatch batches while a worker is free and the policy says go; else arm the timer."""
        queue = self._queue
        while self._running < self._instances:
            while queue and not queue[0].queued:
                queue.popleft()
            if not queue:
                return
            now = max(time.monotonic(), not_before)
            decision = decide(
                self._candidate_rows(),
                config=self._config,
                oldest_enqueued_at=queue[0].enqueued_at,
                # Closed to new requests: waiting for company is pointless.
                now=math.inf if self._closing else now,
                idle_arrival=idle_arrival,
            )
            if decision.take == 0:
                assert decision.wake_at is not None
                self._arm(decision.wake_at)
                return
            assert decision.reason is not None
            self._dispatch(decision.take, decision.reason, now)
            idle_arrival = False

    def _candidate_rows(self) -> Iterator[int]:
        """Rows of queued requests, oldest first; ends at one that cannot share the head's shapes."""
        if not self._ragged:
            return (entry.rows for entry in self._queue if entry.queued)
        return self._compatible_rows()

    def _compatible_rows(self) -> Iterator[int]:
        head: ShapeKey | None = None
        for entry in self._queue:
            if not entry.queued:
                continue
            key = self._shape_key(entry.inputs)
            if head is None:
                head = key
            elif key != head:
                # Acts as "the next request does not fit": the head's batch is complete.
                yield self._max_batch_size + 1
                return
            yield entry.rows

    def _shape_key(self, inputs: Tensors) -> ShapeKey:
        return tuple(inputs[name].shape[1:] for name in self._input_names)

    def _arm(self, wake_at: float) -> None:
        if self._timer is not None:
            if self._timer_at <= wake_at:
                return
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = wake_at
        self._timer = self._loop.call_later(max(0.0, wake_at - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        fired_for = self._timer_at
        self._timer = None
        self._timer_at = math.inf
        # The loop may run a timer a hair early (clock resolution); decide as if on time.
        self._pump(not_before=fired_for)

    # --- dispatch --------------------------------------------------------------

    def _dispatch(self, take: int, reason: Reason, now: float, observe_later: bool = False) -> None:
        """Send the first `take` queued requests as one batch: inline when cheap (answered before
        this returns), else to a worker. `observe_later`: an inline batch's observer is called on
        the next loop turn, after the callers (already answered) have written their answers."""
        queue = self._queue
        entries: list[PendingRequest] = []
        rows = 0
        while take:
            entry = queue.popleft()
            if not entry.queued:
                continue
            take -= 1
            entry.queued = False
            self._queued -= 1
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.future.done():  # the caller went away
                continue
            if entry.deadline is not None and entry.deadline <= now:
                entry.future.set_exception(DeadlineExceeded(entry.deadline - entry.enqueued_at))
                continue
            entries.append(entry)
            rows += entry.rows
            self._m_queue_duration.observe(now - entry.enqueued_at)
        if not entries:
            self._check_drained()
            return
        assert self._loop is not None
        self._running += 1
        inline = False
        try:
            if len(entries) == 1:
                inputs = entries[0].inputs
            else:
                inputs = {name: np.concatenate([entry.inputs[name] for entry in entries]) for name in self._input_names}
            inline = self._batch_axis and self._executor.cheap(rows)
            if not inline:
                self._executor.submit(self._loop, inputs, partial(self._finish, entries, rows, inputs))
        except Exception as error:
            # Popped entries must never be left without an answer. The surrounding _pump
            # loop goes on with the rest of the queue.
            self._running -= 1
            self._fail(entries, rows, error)
            self._check_drained()
            return
        self._m_batches[reason].inc()
        self._m_batch_size.observe(rows)
        if inline:
            # Cheaper for the loop than the hop to a worker (runtime/executor.py), at any load.
            # Answered here and now: the pump that called this goes on with the queue, as the
            # pump of a worker's `_finish` would; no loop turn between the run and the answers.
            outputs, failure, run_s = self._executor.run_inline(inputs, rows)
            if self._hand_out(entries, rows, outputs, failure, run_s) is None and self._on_batch is not None:
                assert outputs is not None
                if observe_later:
                    self._loop.call_soon(self._on_batch, inputs, outputs)
                else:
                    self._on_batch(inputs, outputs)
            self._check_drained()

    def _finish(
        self,
        entries: list[PendingRequest],
        rows: int,
        inputs: Tensors,
        outputs: Tensors | None,
        error: BaseException | None,
        run_s: float,
    ) -> None:
        """On the loop, when a worker's batch came back: hand out its rows, refill, then observe."""
        error = self._hand_out(entries, rows, outputs, error, run_s)
        self._pump()
        self._check_drained()
        if error is None and outputs is not None and self._on_batch is not None:
            # Last: the next batch is already on a worker and every caller has its answer.
            self._on_batch(inputs, outputs)

    def _hand_out(
        self,
        entries: list[PendingRequest],
        rows: int,
        outputs: Tensors | None,
        error: BaseException | None,
        run_s: float,
    ) -> BaseException | None:
        """A batch ran: give each caller its rows, or every caller the batch's one error
        (returned; None when the batch succeeded)."""
        self._running -= 1
        self._busy_s += run_s
        self._m_inference_duration.observe(run_s)
        if error is None and self._batch_axis:
            assert outputs is not None
            error = self._check_rows(outputs, rows)
        if error is not None:
            self._fail(entries, rows, error)
        elif len(entries) == 1:
            if not entries[0].future.done():
                entries[0].future.set_result(outputs)  # type: ignore[arg-type]
        else:
            assert outputs is not None
            start = 0
            for entry in entries:
                end = start + entry.rows
                if not entry.future.done():
                    entry.future.set_result({name: array[start:end] for name, array in outputs.items()})
                start = end
        return error

    def _fail(self, entries: list[PendingRequest], rows: int, error: BaseException) -> None:
        """Answer every caller of one batch with the same error (InferenceFailed if foreign)."""
        if not isinstance(error, HotserveError):
            log.error("model %r version %d: batch of %d rows failed", self.name, self.version, rows, exc_info=error)
            error = InferenceFailed(
                f"model {self.name!r} version {self.version}: runtime raised {type(error).__name__}: {error}"
            )
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(error)

    def _check_rows(self, outputs: Tensors, rows: int) -> InferenceFailed | None:
        for name, array in outputs.items():
            got = array.shape[0] if isinstance(array, np.ndarray) and array.ndim else None
            if got != rows:
                return InferenceFailed(
                    f"model {self.name!r} version {self.version}: output {name!r} has "
                    f"{'no batch axis' if got is None else f'{got} rows'} for a batch of {rows} rows"
                )
        return None

    # --- shutdown --------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Requests waiting (not yet dispatched)."""
        return self._queued

    @property
    def closing(self) -> bool:
        """True once `close()` started: new requests are refused."""
        return self._closing

    @property
    def running(self) -> int:
        """Batches on workers right now."""
        return self._running

    @property
    def busy_s(self) -> float:
        """Seconds its batches have run on workers, in all (what it costs in inference time)."""
        return self._busy_s

    async def close(self, timeout_s: float) -> bool:
        """Refuse new requests, let queued and running ones finish for up to `timeout_s`.

        Returns True when everything finished; otherwise the requests still queued are
        answered `ModelNotReady` and running batches are left to end on their own.
        """
        self._closing = True
        if self._loop is not None:
            self._pump()
        drained = True
        if self._queued or self._running:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout_s)
            except TimeoutError:
                drained = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            entry = self._queue.popleft()
            if entry.queued and not entry.future.done():
                entry.future.set_exception(
                    ModelNotReady(f"model {self.name!r} version {self.version} closed before the request ran")
                )
            self._leave(entry)
        if not drained:
            log.warning(
                "model %r version %d: %d batch(es) still running after %.1f s of drain",
                self.name,
                self.version,
                self._running,
                timeout_s,
            )
        return drained and not self._running

    def _check_drained(self) -> None:
        if self._drained is not None and not self._queued and not self._running:
            self._drained.set()
