"""The nearest-neighbour baselines SKNN, V-SKNN, STAN and V-STAN as RecBole models.

Each is a configuration of :class:`~recbole_srgnn.nn_knn.KnnScorer` (formulas in
:mod:`recbole_srgnn.nn_knn`): SKNN (Jannach & Ludewig, RecSys 2017: binary cosine),
V-SKNN (Ludewig & Jannach, UMUAI 2018: linearly position-weighted dot product, neighbours weighted
by how recently the shared item was clicked, IDF weighting), STAN (Garg et al., SIGIR 2019:
decays λ1 over the current session's positions, λ2 over the neighbour's age, λ3 over an item's
distance from the shared item in the neighbour) and V-STAN (Ludewig et al., UMUAI 2021: STAN plus
V-SKNN's neighbour weight (exponential, λ_ipw), its IDF weighting and a choice of similarity).
Parameters and defaults: ``recbole_srgnn/properties/model/<Model>.yaml``.

Nothing is learned: the index is built from the training split the model is given (RecBole hands
``train_data.dataset`` to the constructor) in one vectorised pass; a ``dummy`` parameter gives
the trainer something to step, and one zero-loss epoch is all it needs to run.
"""

from __future__ import annotations

from typing import Any

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from torch import Tensor

from .nonneural import NonNeuralRecommender

from ..nn_knn import KnnOptions, KnnScorer


def scorer_of_split(model: SequentialRecommender, dataset, time_field: str | None,
                    options: KnnOptions, what: str = "a kNN scorer") -> KnnScorer:
    """The :class:`KnnScorer` of a RecBole training split ``dataset`` (its session, prefix,
    target and, if present, ``time_field`` columns), with ``model``'s field names."""
    feat = dataset.inter_feat
    if model.USER_ID not in feat:
        raise ValueError(f"{what} needs the session field {model.USER_ID} in the training split")
    time = torch.as_tensor(feat[time_field]) if time_field and time_field in feat else None
    return KnnScorer.from_cases(
        torch.as_tensor(feat[model.USER_ID]), torch.as_tensor(feat[model.ITEM_SEQ]),
        torch.as_tensor(feat[model.ITEM_SEQ_LEN]), torch.as_tensor(feat[model.ITEM_ID]),
        time, model.n_items, options)


def variant_options(model_class: type["KnnRecommender"], values: dict[str, Any]) -> KnnOptions:
    """The options of ``model_class`` (SKNN, ...) with ``values`` over its configurable defaults;
    ValueError (one line) for a key it does not have or a value out of range."""
    unknown = sorted(set(values) - set(model_class.KEYS))
    if unknown:
        raise ValueError(f"{model_class.__name__} has no option {', '.join(unknown)} "
                         f"(options: {', '.join(model_class.KEYS)})")
    options = KnnOptions(**model_class.FIXED, **{**model_class.KEYS, **values})
    options.check()
    return options


class KnnRecommender(NonNeuralRecommender):
    """Base class: ``FIXED`` options define the variant, ``KEYS`` are read from the config."""

    FIXED: dict[str, Any] = {}
    KEYS: dict[str, Any] = {}  # config key -> default when the config leaves it unset (as the YAML)

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        values = {key: (default if config[key] is None else config[key])
                  for key, default in self.KEYS.items()}
        options = KnnOptions(**self.FIXED, **values)
        options.check()  # before the index is built
        self.knn = scorer_of_split(self, dataset, config["TIME_FIELD"], options,
                                   type(self).__name__)

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        return self.knn(item_seq, item_seq_len)



class SKNN(KnnRecommender):
    """Session-based kNN: binary cosine over the sample_size most recent candidates."""

    FIXED = {"item_weight": "same", "similarity": "cosine", "neighbour_weight": "same"}
    KEYS = {"k": 100, "sample_size": 500}


class VSKNN(KnnRecommender):
    """V-SKNN: position-weighted dot product, 1/(gap + 1) neighbour weights, IDF weighting."""

    FIXED = {"item_weight": "div", "similarity": "vec", "neighbour_weight": "div"}
    KEYS = {"k": 100, "sample_size": 500, "lambda_idf": 0.0}


class STAN(KnnRecommender):
    """STAN: SKNN with the three exponential decays λ1 (spw), λ2 (snh), λ3 (inh)."""

    FIXED = {"item_weight": "exp", "similarity": "cosine", "neighbour_weight": "same"}
    KEYS = {"k": 100, "sample_size": 5000, "lambda_spw": 1.02, "lambda_snh": 5.0,
            "lambda_inh": 2.05}


class VSTAN(KnnRecommender):
    """V-STAN: STAN plus an exponential neighbour weight (λ_ipw), IDF weighting, similarity."""

    FIXED = {"item_weight": "exp", "neighbour_weight": "exp"}
    KEYS = {"k": 100, "sample_size": 5000, "similarity": "cosine", "lambda_spw": 1.02,
            "lambda_snh": 5.0, "lambda_inh": 2.05, "lambda_ipw": 1.02, "lambda_idf": 5.0}
