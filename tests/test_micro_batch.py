"""MicroBatcher: concurrent requests scored in groups give Recommender.recommend's answers."""

from __future__ import annotations

import threading

import pytest
import torch

from recbole_srgnn.bundle import bundle_metadata, write_bundle
from recbole_srgnn.errors import InputError
from recbole_srgnn.micro_batch import MicroBatcher
from recbole_srgnn.nn import SRGNN
from recbole_srgnn.recommend import Recommender

N_ITEMS = 300


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Recommender:
    torch.manual_seed(0)
    network = SRGNN(n_items=N_ITEMS, embedding_size=16)
    items = ["[PAD]"] + [f"i{n}" for n in range(1, N_ITEMS)]
    metadata = bundle_metadata(model="SRGNN", config=network.options(), items=items,
                               popularity=list(range(N_ITEMS)), max_prefix_length=20,
                               dataset="random", data_fingerprint=None)
    folder = write_bundle(tmp_path_factory.mktemp("mb") / "bundle", network.state_dict(), metadata)
    return Recommender.load(folder)


def sessions(count: int) -> list[list[str]]:
    g = torch.Generator().manual_seed(1)
    return [[f"i{int(i)}" for i in torch.randint(1, N_ITEMS, (int(n),), generator=g)]
            for n in torch.randint(1, 8, (count,), generator=g)]


class Held:
    """Wraps ``rec.recommend_batch``: records each group's size; the first call waits for
    ``release`` so that the other requests queue up behind it."""

    def __init__(self, rec: Recommender) -> None:
        self.inner, self.sizes = rec.recommend_batch, []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, batch, *args, **kwargs):
        self.sizes.append(len(batch))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self.release.wait(30)
        return self.inner(batch, *args, **kwargs)


def run_concurrently(batcher: MicroBatcher, held: Held, calls: list[dict]) -> list:
    """The first call alone, then the rest while it is held; each answer or exception."""
    answers: list = [None] * len(calls)

    def one(index: int) -> None:
        try:
            answers[index] = batcher.recommend(**calls[index])
        except Exception as exc:  # noqa: BLE001 - compared by the test
            answers[index] = exc

    first = threading.Thread(target=one, args=(0,))
    first.start()
    assert held.entered.wait(30)
    rest = [threading.Thread(target=one, args=(i,)) for i in range(1, len(calls))]
    for thread in rest:
        thread.start()
    while batcher._queue.qsize() < len(rest):  # noqa: SLF001 - the test waits for the queue
        threading.Event().wait(0.01)
    held.release.set()
    for thread in [first, *rest]:
        thread.join(30)
    return answers


def test_grouped_answers_equal_single_recommendations(rec, monkeypatch):
    held = Held(rec)
    monkeypatch.setattr(rec, "recommend_batch", held)
    batcher = MicroBatcher(rec, max_batch=8)
    calls = [{"session": s, "k": 10} for s in sessions(13)]
    calls[5] = {"session": calls[5]["session"], "k": 5, "exclude_seen": True}  # its own group
    answers = run_concurrently(batcher, held, calls)
    batcher.close()
    monkeypatch.undo()
    assert held.sizes[0] == 1 and max(held.sizes) > 1, held.sizes  # requests were grouped
    assert sum(held.sizes) == len(calls) and 1 in held.sizes[1:]  # the k=5 one scored alone
    for call, answer in zip(calls, answers):
        alone = rec.recommend(**call)
        assert answer.items == alone.items
        assert answer.scores == pytest.approx(alone.scores, abs=1e-5)
        assert (answer.unknown_items, answer.fallback) == (alone.unknown_items, alone.fallback)


def test_a_bad_request_in_a_group_fails_alone(rec, monkeypatch):
    held = Held(rec)
    monkeypatch.setattr(rec, "recommend_batch", held)
    batcher = MicroBatcher(rec, max_batch=8)
    calls = [{"session": s, "k": 10} for s in sessions(6)]
    calls[3] = {"session": ["i1", 2.5], "k": 10}  # not an item id
    answers = run_concurrently(batcher, held, calls)
    batcher.close()
    monkeypatch.undo()
    assert isinstance(answers[3], InputError) and "2.5" in str(answers[3])
    for index, (call, answer) in enumerate(zip(calls, answers)):
        if index != 3:
            assert answer.items == rec.recommend(**call).items


def test_a_request_alone_is_exactly_recommend_and_bad_sizes_are_refused(rec):
    batcher = MicroBatcher(rec)
    for session in sessions(5):
        alone, batched = rec.recommend(session, k=7), batcher.recommend(session, k=7)
        assert (batched.items, batched.scores) == (alone.items, alone.scores)
    batcher.close()
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(rec, max_batch=0)
