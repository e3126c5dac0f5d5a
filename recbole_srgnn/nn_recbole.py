r"""RecBole's sequential baselines used here as plain ``torch.nn.Module``s, for model bundles.

The comparison trains RecBole 1.2.1's own ``GRU4Rec``, ``NARM`` and ``SRGNN`` (this project's
name for the last is ``RecBoleSRGNN``: ``training.models``). To serve them without RecBole, these
networks compute what those models' ``full_sort_predict`` computes, written afresh from the
papers and RecBole's documented behaviour, with **the same parameter names** (``state_dict``
keys), so that a bundle (:mod:`recbole_srgnn.bundle`) copies a trained model's weights as they
are. Constructor arguments are the RecBole config keys each model reads.

* :class:`GRU4Rec`: Hidasi et al., ICLR 2016, https://arxiv.org/abs/1511.06939, as improved by
  Tan et al., DLRS 2016, https://arxiv.org/abs/1606.08117 (RecBole's variant);
* :class:`NARM`: Li et al., CIKM 2017, https://arxiv.org/abs/1711.04725;
* :class:`RecBoleSRGNN`: Wu et al., AAAI 2019, https://arxiv.org/abs/1811.00855, in RecBole's
  dense form (one ``[L, 2L]`` adjacency per session, padding positions as isolated nodes).

As in :mod:`recbole_srgnn.nn`: ids ``1 .. n_items - 1`` are items, 0 is padding after the items;
``forward(item_seq [B, L], item_seq_len [B]) -> [B, n_items]`` scores (column 0 included).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn


def last_state(states: Tensor, item_seq_len: Tensor) -> Tensor:
    """``[B, L, d]`` per-position states -> ``[B, d]`` the state at each session's last item."""
    last = (item_seq_len.long().view(-1) - 1).clamp(min=0)
    return states[torch.arange(states.shape[0], device=states.device), last]


def xavier_init(module: nn.Module) -> None:
    """Xavier-normal embeddings and linear weights, zero biases, Xavier-uniform GRU weights."""
    for child in module.modules():
        if isinstance(child, (nn.Embedding, nn.Linear)):
            nn.init.xavier_normal_(child.weight)
            if getattr(child, "bias", None) is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, nn.GRU):
            for weight in child.parameters():
                nn.init.xavier_uniform_(weight)


class GRU4Rec(nn.Module):
    """A bias-free GRU over the item embeddings; its output at the last item, projected back to
    the embedding size, is dotted with every item embedding."""

    def __init__(self, n_items: int, embedding_size: int = 64, hidden_size: int = 128,
                 num_layers: int = 1, dropout_prob: float = 0.3) -> None:
        super().__init__()
        self.n_items, self.embedding_size = int(n_items), int(embedding_size)
        self.hidden_size, self.num_layers = int(hidden_size), int(num_layers)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(float(dropout_prob))
        self.gru_layers = nn.GRU(self.embedding_size, self.hidden_size, self.num_layers,
                                 bias=False, batch_first=True)
        self.dense = nn.Linear(self.hidden_size, self.embedding_size)
        xavier_init(self)

    def options(self) -> dict:
        return {"n_items": self.n_items, "embedding_size": self.embedding_size,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "dropout_prob": float(self.emb_dropout.p)}

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        states, _ = self.gru_layers(self.emb_dropout(self.item_embedding(item_seq)))
        session = last_state(self.dense(states), item_seq_len)
        return session @ self.item_embedding.weight.t()


class NARM(nn.Module):
    r"""A bias-free GRU encoder; the session vector combines its last state :math:`h_t`
    (global) with an attention-weighted sum of all states (local,
    :math:`\alpha_j = v^\top \sigma(A_1 h_j + A_2 h_t)` over the real positions) through a
    bilinear decoder ``b``: scores are :math:`\mathbf{e}_v^\top B [c_{local}; h_t]`."""

    def __init__(self, n_items: int, embedding_size: int = 64, hidden_size: int = 128,
                 n_layers: int = 1, dropout_probs: Sequence[float] = (0.25, 0.5)) -> None:
        super().__init__()
        if len(dropout_probs) != 2:
            raise ValueError("dropout_probs must be two rates (embedding, context)")
        self.n_items, self.embedding_size = int(n_items), int(embedding_size)
        self.hidden_size, self.n_layers = int(hidden_size), int(n_layers)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(float(dropout_probs[0]))
        self.gru = nn.GRU(self.embedding_size, self.hidden_size, self.n_layers, bias=False,
                          batch_first=True)
        self.a_1 = nn.Linear(self.hidden_size, self.hidden_size, bias=False)
        self.a_2 = nn.Linear(self.hidden_size, self.hidden_size, bias=False)
        self.v_t = nn.Linear(self.hidden_size, 1, bias=False)
        self.ct_dropout = nn.Dropout(float(dropout_probs[1]))
        self.b = nn.Linear(2 * self.hidden_size, self.embedding_size, bias=False)
        xavier_init(self)

    def options(self) -> dict:
        return {"n_items": self.n_items, "embedding_size": self.embedding_size,
                "hidden_size": self.hidden_size, "n_layers": self.n_layers,
                "dropout_probs": [float(self.emb_dropout.p), float(self.ct_dropout.p)]}

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        states, _ = self.gru(self.emb_dropout(self.item_embedding(item_seq)))
        last = last_state(states, item_seq_len)
        real = (item_seq > 0).unsqueeze(-1).to(states.dtype)
        weight = self.v_t(real * torch.sigmoid(self.a_1(states) + self.a_2(last).unsqueeze(1)))
        local = (weight * states).sum(dim=1)
        session = self.b(self.ct_dropout(torch.cat([local, last], dim=1)))
        return session @ self.item_embedding.weight.t()


def session_adjacency(item_seq: Tensor, item_seq_len: Tensor) -> tuple[Tensor, Tensor]:
    """Dense SR-GNN graphs: ``(node [B, L], adjacency [B, L, L])``.

    Node ``q`` of a session stands for the item first seen at position ``q`` (``node[b, p]`` is
    that position for the item at ``p``; padding positions share one isolated node);
    ``adjacency[b, u, v] = 1`` when the session clicks ``v``'s item right after ``u``'s (once,
    however often).
    """
    batch, length = item_seq.shape
    same = item_seq.unsqueeze(2) == item_seq.unsqueeze(1)                     # [B, L, L]
    node = same.to(torch.uint8).argmax(dim=2)                                # first occurrence
    adjacency = item_seq.new_zeros((batch, length, length), dtype=torch.float32)
    steps = torch.arange(length - 1, device=item_seq.device)
    clicked = steps.unsqueeze(0) + 1 < item_seq_len.long().view(-1, 1)       # [B, L-1]
    rows = torch.arange(batch, device=item_seq.device).unsqueeze(1).expand_as(clicked)
    src, dst = node[:, :-1], node[:, 1:]
    adjacency[rows[clicked], src[clicked], dst[clicked]] = 1.0
    return node, adjacency


class GatedGraphCell(nn.Module):
    """One shared gated propagation step of SR-GNN (Eq. 1-5), over dense normalised adjacencies,
    parameters named as RecBole's ``GNN``."""

    def __init__(self, embedding_size: int, step: int = 1) -> None:
        super().__init__()
        d = self.embedding_size = int(embedding_size)
        self.step = int(step)
        self.w_ih = nn.Parameter(torch.empty(3 * d, 2 * d))
        self.w_hh = nn.Parameter(torch.empty(3 * d, d))
        self.b_ih = nn.Parameter(torch.empty(3 * d))
        self.b_hh = nn.Parameter(torch.empty(3 * d))
        self.b_iah = nn.Parameter(torch.empty(d))
        self.b_ioh = nn.Parameter(torch.empty(d))
        self.linear_edge_in = nn.Linear(d, d, bias=True)
        self.linear_edge_out = nn.Linear(d, d, bias=True)

    def propagate(self, incoming: Tensor, outgoing: Tensor, hidden: Tensor) -> Tensor:
        """``incoming[b, i, j]`` = edge ``j -> i`` / in-degree of ``i``; ``outgoing[b, i, j]`` =
        edge ``i -> j`` / out-degree of ``i``; ``hidden`` ``[B, N, d]``."""
        message = torch.cat([incoming @ self.linear_edge_in(hidden) + self.b_iah,
                             outgoing @ self.linear_edge_out(hidden) + self.b_ioh], dim=2)
        gate_x = torch.nn.functional.linear(message, self.w_ih, self.b_ih)
        gate_h = torch.nn.functional.linear(hidden, self.w_hh, self.b_hh)
        reset_x, update_x, new_x = gate_x.chunk(3, dim=2)
        reset_h, update_h, new_h = gate_h.chunk(3, dim=2)
        reset = torch.sigmoid(reset_x + reset_h)
        update = torch.sigmoid(update_x + update_h)
        candidate = torch.tanh(new_x + reset * new_h)
        return (1 - update) * hidden + update * candidate

    def forward(self, adjacency: Tensor, hidden: Tensor) -> Tensor:
        in_degree = adjacency.sum(dim=1).clamp(min=1.0)                       # [B, N]
        out_degree = adjacency.sum(dim=2).clamp(min=1.0)
        incoming = adjacency.transpose(1, 2) / in_degree.unsqueeze(2)
        outgoing = adjacency / out_degree.unsqueeze(2)
        for _ in range(self.step):
            hidden = self.propagate(incoming, outgoing, hidden)
        return hidden


class RecBoleSRGNN(nn.Module):
    """RecBole's SR-GNN: gated graph steps over the session's items, then the soft-attention
    readout of the paper (``linear_one`` on the last item, ``linear_two`` on every position,
    ``linear_three`` the weights, ``linear_transform`` of ``[s_global; s_last]``)."""

    def __init__(self, n_items: int, embedding_size: int = 64, step: int = 1) -> None:
        super().__init__()
        d = self.embedding_size = int(embedding_size)
        self.n_items, self.step = int(n_items), int(step)
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.gnn = GatedGraphCell(d, self.step)
        self.linear_one = nn.Linear(d, d, bias=True)
        self.linear_two = nn.Linear(d, d, bias=True)
        self.linear_three = nn.Linear(d, 1, bias=False)
        self.linear_transform = nn.Linear(2 * d, d, bias=True)
        bound = 1.0 / math.sqrt(d)
        for weight in self.parameters():  # every parameter U(-1/sqrt(d), 1/sqrt(d)), as RecBole
            nn.init.uniform_(weight, -bound, bound)

    def options(self) -> dict:
        return {"n_items": self.n_items, "embedding_size": self.embedding_size, "step": self.step}

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        node, adjacency = session_adjacency(item_seq, item_seq_len)
        hidden = self.gnn(adjacency, self.item_embedding(item_seq))  # node q: the item at q
        positions = hidden.gather(1, node.unsqueeze(-1).expand(-1, -1, self.embedding_size))
        last = last_state(positions, item_seq_len)
        weight = self.linear_three(torch.sigmoid(self.linear_one(last).unsqueeze(1)
                                                 + self.linear_two(positions)))
        real = (item_seq > 0).unsqueeze(-1).to(positions.dtype)
        global_state = (weight * positions * real).sum(dim=1)
        session = self.linear_transform(torch.cat([global_state, last], dim=1))
        return session @ self.item_embedding.weight.t()


NETWORKS: dict[str, type[nn.Module]] = {"GRU4Rec": GRU4Rec, "NARM": NARM,
                                        "RecBoleSRGNN": RecBoleSRGNN}
