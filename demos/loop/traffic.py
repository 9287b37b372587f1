"""The demo's clients: fraud transactions sent one row per request over the Open Inference
Protocol, and their labels posted by request id a few seconds after the answer (ground truth
arrives late), the way a case-management system would.

Rows come from `demos.fraud` in chunks, labelled before or after the concept shift as the
`shifted` switch says when the chunk is drawn.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from demos import fraud

CHUNK_ROWS = 4000
FEATURES = fraud.REQUEST_FEATURES + fraud.STORE_FEATURES
"""The model's input columns, in the order `hotserve train` gives demo:fraud."""


class RowStream:
    """Endless demo transactions: (features, label), from the pattern in force when drawn."""

    def __init__(self, seed: int) -> None:
        self.shifted = False
        self._seed = seed
        self._rows: collections.deque[tuple[list[float], int]] = collections.deque()
        self._lock = threading.Lock()

    def shift(self) -> None:
        """From now on, the fraud pattern after the shift (rows already drawn are dropped)."""
        with self._lock:
            self.shifted = True
            self._rows.clear()

    def next(self) -> tuple[list[float], int]:
        with self._lock:
            if not self._rows:
                self._seed += 1
                table = fraud.columns(CHUNK_ROWS, self._seed, shifted=self.shifted)
                matrix = np.stack([table[c] for c in FEATURES], axis=1).astype(np.float64)
                self._rows.extend(zip(matrix.tolist(), table[fraud.LABEL].tolist(), strict=True))
            return self._rows.popleft()


@dataclass
class Counters:
    answered: int = 0
    failed: int = 0
    labels_sent: int = 0
    labels_joined: int = 0
    label_retries: int = 0
    """Label batches refused (503) or unsent and sent again, as a feeder retries."""
    versions: collections.Counter[str] = field(default_factory=collections.Counter)
    """Requests answered per version (from the answers' model_version)."""


class Traffic:
    """`clients` threads sending about `rate_rps` requests per second in all, and one thread
    posting each answered row's label `label_delay_s` after its answer."""

    def __init__(
        self, urls: list[str], token: str, stream: RowStream, rate_rps: float, label_delay_s: float, clients: int = 4
    ) -> None:
        self.urls = urls
        self.token = token
        self.stream = stream
        self.rate_rps = rate_rps
        self.label_delay_s = label_delay_s
        self.clients = clients
        self.counters = Counters()
        self.errors: collections.deque[str] = collections.deque(maxlen=5)
        self._pending: collections.deque[tuple[float, str, int]] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sequence = 0

    def start(self) -> None:
        for i in range(self.clients):
            self._threads.append(threading.Thread(target=self._client, args=(i,), daemon=True, name=f"client-{i}"))
        self._threads.append(threading.Thread(target=self._labeller, daemon=True, name="labeller"))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _request_id(self) -> str:
        with self._lock:
            self._sequence += 1
            return f"loop-{self._sequence:07d}"

    def _client(self, index: int) -> None:
        interval = self.clients / self.rate_rps
        url = self.urls[index % len(self.urls)] + "/v2/models/fraud/infer"
        next_at = time.monotonic() + index * interval / self.clients
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                next_at = max(next_at + interval, time.monotonic() - interval)
                row, label = self.stream.next()
                request_id = self._request_id()
                body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, len(row)], "data": row}]}
                try:
                    answer = client.post(url, json=body, headers={"x-request-id": request_id})
                except httpx.HTTPError as error:
                    self._failed(f"{type(error).__name__}: {error}")
                    continue
                if answer.status_code != 200:
                    self._failed(f"{answer.status_code}: {answer.text[:200]}")
                    continue
                with self._lock:
                    self.counters.answered += 1
                    self.counters.versions[str(answer.json().get("model_version"))] += 1
                    self._pending.append((time.monotonic(), request_id, label))

    def _failed(self, why: str) -> None:
        with self._lock:
            self.counters.failed += 1
            self.errors.append(why)

    def _labeller(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(timeout=30, headers=headers) as client:
            while not self._stop.wait(0.5):
                due = time.monotonic() - self.label_delay_s
                taken = []
                with self._lock:
                    while self._pending and self._pending[0][0] <= due:
                        taken.append(self._pending.popleft())
                if not taken:
                    continue
                batch = [{"request_id": request_id, "row": 0, "label": label} for _, request_id, label in taken]
                try:
                    answer = client.post(f"{self.urls[-1]}/v2/models/fraud/labels", json=batch)
                    status, text = answer.status_code, answer.text
                except httpx.HTTPError as error:
                    status, text = 0, f"{type(error).__name__}: {error}"
                if status in (0, 503):  # unavailable for now: the same labels again next time
                    with self._lock:
                        self._pending.extendleft(reversed(taken))
                        self.counters.label_retries += 1
                        self.errors.append(f"labels (retried): {status}: {text[:200]}")
                    continue
                if status != 200:
                    self._failed(f"labels: {status}: {text[:200]}")
                    continue
                with self._lock:
                    self.counters.labels_sent += len(batch)
                    self.counters.labels_joined += int(answer.json().get("joined", 0))
