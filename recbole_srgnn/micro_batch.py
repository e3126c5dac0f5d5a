"""``MicroBatcher``: concurrent one-session requests scored together, one forward pass per group.

Scoring one session is a ``[1, d] x [d, n_items]`` product that reads the whole item table from
memory for one row of scores; on a 37k-item catalogue that read, not the arithmetic, is most of a
request's time. A server that scores each request alone therefore gets no more requests per
second from concurrency. The batcher puts each request on a queue; one worker thread takes every
request waiting (up to ``max_batch``), groups them by their options (``k``, ``exclude_seen``,
``exclude``) and answers each group with one :meth:`Recommender.recommend_batch` call, so the
table is read once per group. Nothing waits for a batch to fill: a request that arrives alone is
scored at once, alone, so without concurrency the answers are exactly ``Recommender.recommend``'s;
within a group the scores come from a matrix product instead of a vector product and may differ
in the last bits of float precision.

A group that fails (e.g. one request's bad item id) is answered request by request, so one bad
request gets its own error and the others their results.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .recommend import Recommendation, Recommender


@dataclass
class _Request:
    session: Sequence[str]
    k: int
    exclude_seen: bool
    exclude: tuple[str, ...]
    answer: Future = field(default_factory=Future)

    @property
    def options(self) -> tuple:
        return self.k, self.exclude_seen, self.exclude


class MicroBatcher:
    """``recommend`` like :class:`Recommender`'s, scored in groups of concurrent requests."""

    def __init__(self, recommender: Recommender, max_batch: int = 32) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a whole number >= 1, got {max_batch!r}")
        self.recommender = recommender
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="micro-batch", daemon=True)
        self._worker.start()

    def submit(self, session: Sequence[str], k: int = 10, *, exclude_seen: bool = False,
               exclude: Sequence[str] = ()) -> "Future[Recommendation]":
        """Queue one request; its future holds the Recommendation (or the request's error).

        An asyncio caller awaits ``asyncio.wrap_future(batcher.submit(...))``.
        """
        request = _Request(session, k, exclude_seen, tuple(exclude))
        self._queue.put(request)
        return request.answer

    def recommend(self, session: Sequence[str], k: int = 10, *, exclude_seen: bool = False,
                  exclude: Sequence[str] = ()) -> Recommendation:
        """The top ``k`` items after ``session``; blocks until its group has been scored."""
        return self.submit(session, k, exclude_seen=exclude_seen, exclude=exclude).result()

    def close(self) -> None:
        """Stop the worker once the requests already queued are answered."""
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _waiting(self, first: _Request) -> tuple[list[_Request], bool]:
        taken, stop = [first], False
        while len(taken) < self.max_batch:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                stop = True
                break
            taken.append(request)
        return taken, stop

    def _work(self) -> None:
        with torch.inference_mode():
            while True:
                first = self._queue.get()
                if first is None:
                    return
                taken, stop = self._waiting(first)
                groups: dict[tuple, list[_Request]] = {}
                for request in taken:
                    groups.setdefault(request.options, []).append(request)
                for members in groups.values():
                    self._answer(members)
                if stop:
                    return

    def _answer(self, members: list[_Request]) -> None:
        k, exclude_seen, exclude = members[0].options
        try:
            results = self.recommender.recommend_batch(
                [m.session for m in members], k, exclude_seen=exclude_seen, exclude=exclude,
                batch_size=max(len(members), 1))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request(s)
            if len(members) > 1:
                for member in members:  # find the request that failed; answer the others
                    self._answer([member])
                return
            members[0].answer.set_exception(exc)
            return
        for member, result in zip(members, results):
            member.answer.set_result(result)
