r"""Sampled softmax (``loss_type: SSM``): the loss over a batch's candidates, and their sampler.

Full cross-entropy scores every session against the whole catalogue; on a large one that
``[B, n_items]`` product and its softmax dominate a training step. The sampled softmax scores a
shared candidate set instead: the batch's ``B`` targets plus ``N`` (``num_negatives``) items
drawn, with replacement, in proportion to training popularity :math:`\mathrm{cnt}(c)^\alpha`
(``sample_alpha``; 0 = uniform over the catalogue). The candidates are thus a mixture of two
proposals, and a candidate draw is item :math:`c` with probability

.. math::
    Q(c) = \frac{B\,p_1(c) + N\,p_\alpha(c)}{B + N}, \qquad
    p_\alpha(c) = \frac{\mathrm{cnt}(c)^\alpha}{\sum_j \mathrm{cnt}(j)^\alpha}

(``cnt`` = how often an item is a training target; the in-batch targets are, in effect, draws
from :math:`p_1`). With the logQ correction every logit, the positive's too, becomes
:math:`z_c - \log Q(c)`; for row :math:`i` with target :math:`y_i`, every candidate equal to
:math:`y_i` (its own in-batch column, and any sampled copy) is masked out, so

.. math::
    \ell_i = -\big(z_{y_i} - \log Q(y_i)\big) + \log\Big(e^{z_{y_i} - \log Q(y_i)}
        + \sum_{c \in C,\ c \ne y_i} e^{z_c - \log Q(c)}\Big).

With every item once as a candidate and no correction this is exactly the full cross-entropy.
This is ``ssm_correction: logq`` (the form of Jean et al. 2015 and TensorFlow's
``sampled_softmax_loss``). Relative to the full softmax its normaliser weighs the negatives by
:math:`m\,Q(y_i)`, the target's expected count among the :math:`m = B + N` draws, so a rare
target (:math:`m\,Q(y_i) \ll 1`, most of a large catalogue) is an easy row whose gradient
fades.

``ssm_correction: importance`` (the default) estimates the full softmax's normaliser instead
(Bengio and Senécal's importance sampling): the target's logit is counted once, exactly, and
every other candidate is weighted by one over its expected count, which makes the sampled sum
an estimate of :math:`\sum_{c \ne y_i} e^{z_c}` (unbiased for independent draws):

.. math::
    \ell_i = -z_{y_i} + \log\Big(e^{z_{y_i}}
        + \sum_{c \in C,\ c \ne y_i} e^{z_c - \log(m\,Q(c))}\Big).

With every item once as a candidate and :math:`m\,Q \equiv 1` it is again the full
cross-entropy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def sampled_softmax_loss(pos_logits: Tensor, cand_logits: Tensor, targets: Tensor,
                         candidates: Tensor, pos_log_q: Tensor | None = None,
                         cand_log_q: Tensor | None = None) -> Tensor:
    """Mean of the module's :math:`\\ell_i` over the batch.

    ``pos_logits`` ``[B]``: each row's score of its target; ``cand_logits`` ``[B, C]``: the
    scores of the shared ``candidates`` ``[C]``; ``targets`` ``[B]``. ``pos_log_q`` ``[B]`` and
    ``cand_log_q`` ``[C]``: the log sampling probabilities subtracted (None: no correction).
    """
    if pos_log_q is not None:
        pos_logits = pos_logits - pos_log_q
    if cand_log_q is None:
        cand_log_q = cand_logits.new_zeros(cand_logits.shape[1])
    # the same masked softmax as importance's, with the positive corrected as well
    return estimated_softmax_loss(pos_logits, cand_logits, targets, candidates, cand_log_q)


def estimated_softmax_loss(pos_logits: Tensor, cand_logits: Tensor, targets: Tensor,
                           candidates: Tensor, cand_log_count: Tensor) -> Tensor:
    """Mean over the batch of ``ssm_correction: importance``'s :math:`\\ell_i`: the target's logit
    ``pos_logits`` ``[B]`` counted once, exactly, and each candidate (``cand_logits``
    ``[B, C]`` of ``candidates`` ``[C]``) not equal to row ``i``'s target weighted by
    ``exp(-cand_log_count)`` (``[C]``, the log of its expected count among the draws)."""
    hit = candidates.unsqueeze(0) == targets.unsqueeze(1)                   # [B, C]
    weighted = (cand_logits - cand_log_count.unsqueeze(0)).masked_fill(hit, float("-inf"))
    logits = torch.cat([pos_logits.unsqueeze(1), weighted], dim=1)
    zero = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, zero)


def target_counts(targets: Tensor, n_items: int) -> Tensor:
    """``[n_items]`` float counts of each item as a training target (padding id 0 counts 0)."""
    counts = torch.bincount(targets.long().reshape(-1), minlength=n_items)[:n_items].double()
    counts[0] = 0.0
    return counts


class NegativeSampler(nn.Module):
    """Draws negatives in proportion to ``counts ** alpha`` and gives candidates' :math:`\\log Q`.

    Built from the training targets' counts; its tables are non-persistent buffers (rebuilt from
    the training split with the model, never in a checkpoint), so they follow the model's
    device. Draws use ``generator`` when one is given, else torch's global RNG (on the tables'
    device), which RecBole seeds and a resume state restores.
    """

    def __init__(self, counts: Tensor, alpha: float) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"sample_alpha must be >= 0, got {alpha}")
        counts = counts.double().clone()
        counts[0] = 0.0
        if counts.sum() <= 0:
            raise ValueError("no training targets to sample negatives from")
        weights = counts.pow(alpha) if alpha > 0 else torch.ones_like(counts)
        weights[0] = 0.0  # never the padding id
        self.alpha = float(alpha)
        self.register_buffer("sample_prob", weights / weights.sum(), persistent=False)
        self.register_buffer("target_prob", counts / counts.sum(), persistent=False)
        self.register_buffer("cdf", torch.cumsum(weights, 0), persistent=False)
        self.last_item = int(torch.nonzero(weights).max())

    def draw(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``[n]`` item ids, drawn with replacement from ``sample_prob``."""
        cdf = self.cdf
        u = torch.rand(n, dtype=cdf.dtype, device=cdf.device, generator=generator) * cdf[-1]
        return torch.searchsorted(cdf, u, right=True).clamp_(max=self.last_item)

    def log_q(self, candidates: Tensor, batch_size: int, num_negatives: int) -> Tensor:
        """``[C]`` :math:`\\log Q(c)` of the mixture of ``batch_size`` in-batch targets and
        ``num_negatives`` draws (float32, as the logits)."""
        mixed = (batch_size * self.target_prob[candidates]
                 + num_negatives * self.sample_prob[candidates]) / (batch_size + num_negatives)
        return mixed.clamp_min(1e-30).log().float()

    def log_expected_count(self, candidates: Tensor, batch_size: int, num_negatives: int) -> Tensor:
        """``[C]`` :math:`\\log(m\\,Q(c))`, ``m = batch_size + num_negatives``: how often each
        candidate is expected among the draws (the in-batch targets included)."""
        return self.log_q(candidates, batch_size, num_negatives) + math.log(batch_size
                                                                            + num_negatives)
