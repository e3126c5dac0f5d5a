"""SR-GNN model invariants and equality with a dense implementation of the paper's equations."""

from __future__ import annotations

import os

import pytest
import torch
from recbole.data.interaction import Interaction

from graph_reference import random_batch, session_graph
from recbole_srgnn.model import LastItem, SRGNN

NUM_ITEMS = 30


class FakeConfig(dict):
    """Just enough of RecBole's Config for a model: missing keys read as None."""

    def __getitem__(self, key):
        return self.get(key)


class FakeDataset:
    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def num(self, field: str) -> int:
        assert field == "item_id"
        return self.num_items


def make_config(**overrides) -> FakeConfig:
    config = FakeConfig(
        USER_ID_FIELD="session_id",
        ITEM_ID_FIELD="item_id",
        LIST_SUFFIX="_list",
        ITEM_LIST_LENGTH_FIELD="item_length",
        NEG_PREFIX="neg_",
        MAX_ITEM_LIST_LENGTH=50,
        device=torch.device("cpu"),
        embedding_size=16,
        step=1,
        readout="hybrid",
        loss_type="CE",
    )
    config.update(overrides)
    return config


def make_model(seed: int = 0, **overrides) -> SRGNN:
    torch.manual_seed(seed)
    return SRGNN(make_config(**overrides), FakeDataset(NUM_ITEMS)).eval()


def batch(seq, lengths, target=None) -> Interaction:
    data = {"item_id_list": seq, "item_length": lengths}
    if target is not None:
        data["item_id"] = target
    return Interaction(data)


def dense_reference(model: SRGNN, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Scores from the paper's equations, one session at a time, dense matrices, float64."""
    p = {k: v.detach().double() for k, v in model.state_dict().items()}
    d = model.embedding_size
    emb = p["item_embedding.weight"]
    if model.norm_scale:  # NISER: unit-length item vectors everywhere
        emb = emb / emb.norm(dim=1, keepdim=True).clamp(min=1e-12)  # the padding row stays 0
    out = []
    for row in range(seq.shape[0]):
        items = seq[row, : lengths[row]].tolist()
        nodes, index, _, a_in, a_out = session_graph(items)
        h = emb[nodes]
        for _ in range(model.step):
            msg_in = a_in @ (h @ p["gnn.lin_in.weight"].T + p["gnn.lin_in.bias"]) + p["gnn.bias_in"]
            msg_out = a_out @ (h @ p["gnn.lin_out.weight"].T + p["gnn.lin_out.bias"]) + p["gnn.bias_out"]
            a = torch.cat([msg_in, msg_out], dim=1)
            gi = a @ p["gnn.gru.weight_ih"].T + p["gnn.gru.bias_ih"]
            gh = h @ p["gnn.gru.weight_hh"].T + p["gnn.gru.bias_hh"]
            r = torch.sigmoid(gi[:, :d] + gh[:, :d])
            z = torch.sigmoid(gi[:, d : 2 * d] + gh[:, d : 2 * d])
            candidate = torch.tanh(gi[:, 2 * d :] + r * gh[:, 2 * d :])
            h = (1 - z) * candidate + z * h
        positions = h[[index[i] for i in items]]
        last = h[index[items[-1]]]
        alpha = torch.sigmoid(
            last @ p["readout.lin_last.weight"].T + p["readout.lin_last.bias"]
            + positions @ p["readout.lin_position.weight"].T + p["readout.lin_position.bias"]
        ) @ p["readout.lin_score.weight"].T
        s_g = (alpha * positions).sum(0)
        if model.readout.mode == "hybrid":
            s = torch.cat([last, s_g]) @ p["readout.lin_hybrid.weight"].T + p["readout.lin_hybrid.bias"]
        elif model.readout.mode == "global":
            s = s_g
        else:
            s = last
        scores = s @ emb.T
        if model.norm_scale:
            scores = model.norm_scale * (s / s.norm()) @ emb.T
        if model.repeat_recency:  # bias by clicks since the item was last seen
            for item in set(items):
                recency = len(items) - 1 - max(k for k, x in enumerate(items) if x == item)
                scores[item] += p["repeat_bias"][min(recency, model.repeat_recency - 1)]
        out.append(scores)
    return torch.stack(out)


@pytest.mark.parametrize("step,readout", [(1, "hybrid"), (2, "hybrid"), (3, "global"), (1, "last")])
def test_forward_equals_dense_paper_reference(step, readout):
    seed = int.from_bytes(os.urandom(4), "little")
    model = make_model(seed, step=step, readout=readout)
    seq, lengths = random_batch(torch.Generator().manual_seed(seed), 24, 10, NUM_ITEMS)
    with torch.no_grad():
        scores = model.full_sort_predict(batch(seq, lengths))
    expected = dense_reference(model, seq, lengths)
    assert scores.shape == (24, NUM_ITEMS)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-5, msg=f"seed {seed}")


@pytest.mark.parametrize("options", [{"norm_scale": 12.0}, {"repeat_recency": 3},
                                     {"norm_scale": 16.0, "repeat_recency": 5, "step": 2}])
def test_options_beyond_the_paper_equal_the_dense_reference(options):
    seed = int.from_bytes(os.urandom(4), "little")
    model = make_model(seed, **options)
    if model.repeat_bias is not None:  # non-zero, distinct biases (they start at 0)
        with torch.no_grad():
            model.repeat_bias.copy_(torch.randn(model.repeat_recency))
    seq, lengths = random_batch(torch.Generator().manual_seed(seed), 24, 10, NUM_ITEMS)
    with torch.no_grad():
        scores = model.full_sort_predict(batch(seq, lengths))
    expected = dense_reference(model, seq, lengths)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-4, msg=f"seed {seed}")


def test_repeat_bias_moves_only_the_sessions_items():
    model = make_model(9, repeat_recency=2)
    seq = torch.tensor([[5, 7, 5, 9], [4, 0, 0, 0]])
    lengths = torch.tensor([4, 1])
    with torch.no_grad():
        before = model.full_sort_predict(batch(seq, lengths))
        model.repeat_bias.copy_(torch.tensor([10.0, 100.0]))
        after = model.full_sort_predict(batch(seq, lengths))
    delta = after - before
    expected = torch.zeros_like(delta)
    expected[0, 9] = 10.0  # last item: 0 clicks ago
    expected[0, 5] = 100.0  # last seen 1 click ago
    expected[0, 7] = 100.0  # 2 clicks ago: shares the oldest bucket
    expected[1, 4] = 10.0
    torch.testing.assert_close(delta, expected)


def test_scores_do_not_depend_on_batch_neighbours():
    seed = int.from_bytes(os.urandom(4), "little")
    model = make_model(seed, step=2)
    generator = torch.Generator().manual_seed(seed)
    seq, lengths = random_batch(generator, 40, 12, NUM_ITEMS)
    with torch.no_grad():
        whole = model.full_sort_predict(batch(seq, lengths))
        perm = torch.randperm(40, generator=generator)
        permuted = model.full_sort_predict(batch(seq[perm], lengths[perm]))
        torch.testing.assert_close(permuted, whole[perm], msg=f"seed {seed}")
        # alone, or with a different padded width, a session scores the same
        for row in (0, 7, 39):
            alone = model.full_sort_predict(batch(seq[row : row + 1, : int(lengths[row])], lengths[row : row + 1]))
            torch.testing.assert_close(alone[0], whole[row], msg=f"seed {seed} row {row}")


def test_full_sort_predict_agrees_with_predict():
    model = make_model(3)
    seq, lengths = random_batch(torch.Generator().manual_seed(3), 16, 8, NUM_ITEMS)
    target = torch.randint(1, NUM_ITEMS, (16,))
    with torch.no_grad():
        full = model.full_sort_predict(batch(seq, lengths))
        pointwise = model.predict(batch(seq, lengths, target))
    torch.testing.assert_close(pointwise, full[torch.arange(16), target])


def test_ce_loss_is_cross_entropy_over_all_items_and_bpr_works():
    model = make_model(4)
    seq, lengths = random_batch(torch.Generator().manual_seed(4), 16, 8, NUM_ITEMS)
    target = torch.randint(1, NUM_ITEMS, (16,))
    loss = model.calculate_loss(batch(seq, lengths, target))
    expected = torch.nn.functional.cross_entropy(model.full_sort_predict(batch(seq, lengths)), target)
    torch.testing.assert_close(loss, expected)
    bpr = make_model(4, loss_type="BPR")
    data = batch(seq, lengths, target)
    shift = torch.randint(1, NUM_ITEMS - 1, (16,))
    negatives = (target - 1 + shift) % (NUM_ITEMS - 1) + 1  # a real item, never the target
    data.update(Interaction({"neg_item_id": negatives}))
    bpr_loss = bpr.calculate_loss(data)
    bpr_loss.backward()
    assert torch.isfinite(bpr_loss) and bpr.gnn.lin_in.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("options", [{}, {"norm_scale": 12.0, "repeat_recency": 3}])
def test_bpr_loss_equals_its_formula_on_the_models_scores(options):
    """BPR = -mean(log(gamma + sigmoid(s_pos - s_neg))), gamma = 1e-10 (RecBole's BPRLoss), on
    the scores of the sampled positive and negative item of each case."""
    model = make_model(11, loss_type="BPR", step=2, **options)
    if model.repeat_bias is not None:
        with torch.no_grad():
            model.repeat_bias.copy_(torch.tensor([0.5, -0.25, 1.0]))
    seq, lengths = random_batch(torch.Generator().manual_seed(11), 16, 8, NUM_ITEMS)
    target = torch.randint(1, NUM_ITEMS, (16,), generator=torch.Generator().manual_seed(12))
    shift = torch.randint(1, NUM_ITEMS - 1, (16,), generator=torch.Generator().manual_seed(13))
    negatives = (target - 1 + shift) % (NUM_ITEMS - 1) + 1  # a real item, never the target
    assert not torch.equal(negatives, target)
    data = batch(seq, lengths, target)
    data.update(Interaction({"neg_item_id": negatives}))
    loss = model.calculate_loss(data)
    with torch.no_grad():
        scores = model.full_sort_predict(batch(seq, lengths)).double()
    rows = torch.arange(16)
    diff = scores[rows, target] - scores[rows, negatives]
    assert diff.abs().max() > 0.1  # the scores differ: the formula is not checked at 0 only
    expected = -torch.log(1e-10 + torch.sigmoid(diff)).mean()
    assert abs(loss.item() - expected.item()) <= 1e-6, (loss.item(), expected.item())
    # the textbook -mean log sigmoid(s_pos - s_neg): gamma changes nothing at these scores
    assert abs(loss.item() - (-torch.nn.functional.logsigmoid(diff).mean()).item()) <= 1e-6
    # and the scores are the dense paper reference's (norm_scale/repeat_recency included)
    reference = dense_reference(model, seq, lengths)
    ref_diff = reference[rows, target] - reference[rows, negatives]
    assert abs(loss.item() - (-torch.nn.functional.logsigmoid(ref_diff).mean()).item()) <= 1e-5
    # not the cross-entropy over all items
    assert abs(loss.item() - torch.nn.functional.cross_entropy(scores, target).item()) > 1e-3


def test_dropout_only_in_training_mode():
    model = make_model(5, embedding_dropout=0.5, hidden_dropout=0.5)
    seq, lengths = random_batch(torch.Generator().manual_seed(5), 8, 6, NUM_ITEMS)
    with torch.no_grad():
        a = model.full_sort_predict(batch(seq, lengths))
        b = model.full_sort_predict(batch(seq, lengths))
        model.train()
        c = model.full_sort_predict(batch(seq, lengths))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("model_class", [SRGNN, LastItem])
def test_overfits_a_tiny_dataset(model_class):
    """Each session's next item is a deterministic function of its history: memorise it."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    seq, lengths = random_batch(generator, 48, 6, NUM_ITEMS)
    # the target depends on the last item only, so that the floor model can learn it too
    last = seq[torch.arange(48), lengths - 1]
    target = (last * 7) % (NUM_ITEMS - 1) + 1
    model = model_class(make_config(embedding_size=32), FakeDataset(NUM_ITEMS))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    data = batch(seq, lengths, target)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        loss = model.calculate_loss(data)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model.full_sort_predict(data).argmax(1) == target).float().mean().item()
    assert loss.item() < 0.1 and accuracy == 1.0


def test_last_item_scores_with_the_last_items_embedding():
    torch.manual_seed(6)
    model = LastItem(make_config(), FakeDataset(NUM_ITEMS)).eval()
    seq, lengths = random_batch(torch.Generator().manual_seed(6), 8, 6, NUM_ITEMS)
    last = seq[torch.arange(8), lengths - 1]
    with torch.no_grad():
        scores = model.full_sort_predict(batch(seq, lengths))
        table = model.item_embedding.weight
    torch.testing.assert_close(scores, table[last] @ table.T)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_gpu_give_the_same_scores_and_loss():
    model = make_model(7, step=2)
    seq, lengths = random_batch(torch.Generator().manual_seed(7), 64, 20, NUM_ITEMS)
    target = torch.randint(1, NUM_ITEMS, (64,))
    with torch.no_grad():
        cpu_scores = model.full_sort_predict(batch(seq, lengths))
        cpu_loss = model.calculate_loss(batch(seq, lengths, target))
        gpu = model.to("cuda")
        gpu_batch = batch(seq, lengths, target).to("cuda")
        gpu_scores = gpu.full_sort_predict(gpu_batch)
        gpu_loss = gpu.calculate_loss(gpu_batch)
    torch.testing.assert_close(gpu_scores.cpu(), cpu_scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, rtol=1e-4, atol=1e-5)
