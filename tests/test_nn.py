"""The plain torch network (recbole_srgnn.nn) equals the RecBole model built over it."""

from __future__ import annotations

import pytest
import torch

from test_model import FakeDataset, batch, make_config
from recbole_srgnn import nn as networks
from recbole_srgnn.model import LastItem, SRGNN

NUM_ITEMS = 30


def sessions() -> tuple[torch.Tensor, torch.Tensor]:
    seq = torch.tensor([[3, 5, 3, 7, 0, 0], [1, 0, 0, 0, 0, 0], [9, 9, 2, 4, 8, 29]])
    return seq, torch.tensor([4, 1, 6])


@pytest.mark.parametrize("options", [
    {}, {"norm_scale": 12.0}, {"repeat_recency": 3}, {"step": 2, "readout": "global"},
    {"readout": "last", "embedding_dropout": 0.1, "hidden_dropout": 0.2},
])
def test_network_scores_equal_the_recbole_model(options):
    torch.manual_seed(0)
    model = SRGNN(make_config(**options), FakeDataset(NUM_ITEMS)).eval()
    if model.repeat_bias is not None:
        with torch.no_grad():
            model.repeat_bias.copy_(torch.tensor([0.5, -0.25, 1.0]))
    torch.manual_seed(1)  # other initial weights: only the loaded ones may matter
    network = networks.SRGNN(NUM_ITEMS, 16, **{"step": 1, **options}).eval()
    network.load_state_dict(model.state_dict())
    assert set(network.state_dict()) == set(model.state_dict())
    seq, lengths = sessions()
    with torch.no_grad():
        expected = model.full_sort_predict(batch(seq, lengths))
        assert torch.equal(network(seq, lengths), expected)
        assert torch.equal(network.encode(seq, lengths), model.encode(seq, lengths))


def test_network_initialises_like_the_recbole_model():
    torch.manual_seed(3)
    model = SRGNN(make_config(repeat_recency=2), FakeDataset(NUM_ITEMS))
    torch.manual_seed(3)
    network = networks.SRGNN(NUM_ITEMS, 16, repeat_recency=2)
    assert list(network.state_dict()) == [k for k in model.state_dict() if k in network.state_dict()]
    assert all(torch.equal(value, model.state_dict()[key])
               for key, value in network.state_dict().items())
    assert network.options() == {"n_items": NUM_ITEMS, "embedding_size": 16, "step": 1,
                                 "readout": "hybrid", "embedding_dropout": 0.0,
                                 "hidden_dropout": 0.0, "norm_scale": 0.0, "repeat_recency": 2}


def test_last_item_network_equals_the_recbole_model():
    torch.manual_seed(0)
    model = LastItem(make_config(), FakeDataset(NUM_ITEMS)).eval()
    network = networks.LastItem(NUM_ITEMS, 16)
    network.load_state_dict(model.state_dict())
    seq, lengths = sessions()
    assert torch.equal(network(seq, lengths), model.full_scores(seq, lengths))


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        networks.SRGNN(NUM_ITEMS, 16, norm_scale=-1)
    with pytest.raises(ValueError):
        networks.SRGNN(1, 16)


def test_a_retailrocket_sized_catalogue_scores_a_batch():
    n_items = 466_868  # RetailRocket's item count
    network = networks.SRGNN(n_items).eval()  # embedding_size 100, as in the paper
    seq = torch.randint(1, n_items, (4, 10))
    with torch.no_grad():
        scores = network(seq, torch.tensor([10, 3, 1, 7]))
    assert scores.shape == (4, n_items) and torch.isfinite(scores).all()


def test_the_adapter_and_its_network_share_every_tensor_through_copies_and_moves():
    import copy

    model = SRGNN(make_config(repeat_recency=2, hidden_dropout=0.5), FakeDataset(NUM_ITEMS))
    clone = copy.deepcopy(model).eval()
    assert clone.network.gnn is clone.gnn and clone.network.repeat_bias is clone.repeat_bias
    assert clone.network.item_embedding is clone.item_embedding
    assert not clone.network.training and not clone.network.hidden_dropout.training
    clone = clone.to(torch.float64)
    assert clone.network.repeat_bias.dtype == torch.float64
    with torch.no_grad():
        clone.repeat_bias.add_(1.0)
    assert torch.equal(clone.network.repeat_bias, torch.ones(2, dtype=torch.float64))
    assert torch.equal(model.repeat_bias, torch.zeros(2))
