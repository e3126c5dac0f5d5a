"""Graph layers of SR-GNN in PyTorch Geometric style."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter


class SRGNNConv(MessagePassing):
    r"""The gated session-graph layer of SR-GNN.

    From "Session-based Recommendation with Graph Neural Networks" (Wu et al., AAAI 2019,
    https://arxiv.org/abs/1811.00855), Eq. (1)-(5). For node :math:`i` with state
    :math:`\mathbf{h}_i`, messages come along incoming edges (weights
    :math:`1/\deg_{in}(i)`) and, reversed, along outgoing edges (weights
    :math:`1/\deg_{out}(i)`):

    .. math::
        \mathbf{a}^{in}_i  &= \sum_{j \to i} \frac{1}{\deg_{in}(i)}
                              (\mathbf{W}_{in} \mathbf{h}_j + \mathbf{b}_{in}) + \mathbf{c}_{in}

        \mathbf{a}^{out}_i &= \sum_{i \to j} \frac{1}{\deg_{out}(i)}
                              (\mathbf{W}_{out} \mathbf{h}_j + \mathbf{b}_{out}) + \mathbf{c}_{out}

        \mathbf{a}_i &= [\mathbf{a}^{in}_i ; \mathbf{a}^{out}_i]

    followed by a GRU-style gated update of the node state:

    .. math::
        \mathbf{r}_i &= \sigma(\mathbf{W}_r \mathbf{a}_i + \mathbf{U}_r \mathbf{h}_i)

        \mathbf{z}_i &= \sigma(\mathbf{W}_z \mathbf{a}_i + \mathbf{U}_z \mathbf{h}_i)

        \tilde{\mathbf{h}}_i &= \tanh(\mathbf{W}_o \mathbf{a}_i
                                 + \mathbf{r}_i \odot \mathbf{U}_o \mathbf{h}_i)

        \mathbf{h}'_i &= (1 - \mathbf{z}_i) \odot \tilde{\mathbf{h}}_i + \mathbf{z}_i \odot \mathbf{h}_i

    (biases omitted in the gates; this is :class:`torch.nn.GRUCell` with input
    :math:`\mathbf{a}_i`). As in the authors' code, both the message transform and the
    aggregate carry a bias. Calling the layer ``step`` times with the same weights gives the
    paper's ``step`` rounds of propagation.

    Args:
        channels: size of the node states.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(aggr="sum")
        self.channels = channels
        self.lin_in = nn.Linear(channels, channels, bias=True)
        self.lin_out = nn.Linear(channels, channels, bias=True)
        self.bias_in = nn.Parameter(torch.empty(channels))
        self.bias_out = nn.Parameter(torch.empty(channels))
        self.gru = nn.GRUCell(2 * channels, channels, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(d), 1/sqrt(d)) on every weight, as in the authors' code."""
        bound = 1.0 / math.sqrt(self.channels)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(
        self, x: Tensor, edge_index: Tensor, in_weight: Tensor, out_weight: Tensor
    ) -> Tensor:
        """One propagation round.

        Args:
            x: ``[N, channels]`` node states.
            edge_index: ``[2, E]`` de-duplicated directed edges ``src -> dst``.
            in_weight: ``[E]`` ``1 / in_degree(dst)``.
            out_weight: ``[E]`` ``1 / out_degree(src)``.

        Returns:
            ``[N, channels]`` updated node states.
        """
        a_in = self.propagate(edge_index, x=self.lin_in(x), weight=in_weight) + self.bias_in
        a_out = (
            self.propagate(edge_index.flip(0), x=self.lin_out(x), weight=out_weight)
            + self.bias_out
        )
        return self.gru(torch.cat([a_in, a_out], dim=-1), x)

    def message(self, x_j: Tensor, weight: Tensor) -> Tensor:
        return weight.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels})"


class SoftAttentionReadout(nn.Module):
    r"""SR-GNN's session readout over the valid positions of each session.

    With :math:`\mathbf{v}_n` the state of the session's last item and :math:`\mathbf{v}_i`
    those of its positions (Eq. (6)-(7) of https://arxiv.org/abs/1811.00855):

    .. math::
        \alpha_i = \mathbf{q}^\top \sigma(\mathbf{W}_1 \mathbf{v}_n + \mathbf{W}_2 \mathbf{v}_i
                   + \mathbf{c}), \qquad
        \mathbf{s}_g = \sum_i \alpha_i \mathbf{v}_i, \qquad
        \mathbf{s}_h = \mathbf{W}_3 [\mathbf{v}_n ; \mathbf{s}_g]

    ``mode="hybrid"`` returns :math:`\mathbf{s}_h` (the paper's model), ``"global"`` returns
    :math:`\mathbf{s}_g` and ``"last"`` returns :math:`\mathbf{v}_n` (the paper's ablations).
    Positions are packed (no padding); a scatter-sum per session gives :math:`\mathbf{s}_g`.
    """

    MODES = ("hybrid", "global", "last")

    def __init__(self, channels: int, mode: str = "hybrid") -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"readout must be one of {self.MODES}, got {mode!r}")
        self.channels = channels
        self.mode = mode
        self.lin_last = nn.Linear(channels, channels, bias=True)  # W1 (its bias is c)
        self.lin_position = nn.Linear(channels, channels, bias=True)  # W2
        self.lin_score = nn.Linear(channels, 1, bias=False)  # q
        self.lin_hybrid = nn.Linear(2 * channels, channels, bias=True)  # W3
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.channels)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, position_state: Tensor, position_session: Tensor, last_state: Tensor) -> Tensor:
        """Session representations.

        Args:
            position_state: ``[P, channels]`` state of each valid position's node.
            position_session: ``[P]`` batch row of each position.
            last_state: ``[B, channels]`` state of each session's last item.

        Returns:
            ``[B, channels]`` session representations.
        """
        if self.mode == "last":
            return last_state
        gate = torch.sigmoid(self.lin_last(last_state)[position_session] + self.lin_position(position_state))
        alpha = self.lin_score(gate)
        global_state = scatter(
            alpha * position_state, position_session, dim=0, dim_size=last_state.size(0), reduce="sum"
        )
        if self.mode == "global":
            return global_state
        return self.lin_hybrid(torch.cat([last_state, global_state], dim=-1))
