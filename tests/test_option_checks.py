"""Options checked before any work (recbole_srgnn.option_checks), on the real property files."""

from __future__ import annotations

import pytest

from recbole_srgnn.errors import InputError
from recbole_srgnn.model.srgnn import SRGNN
from recbole_srgnn.option_checks import check_layers
from recbole_srgnn.training.config import PROPERTIES_DIR, config_layers, parse_dict


def _check(options: dict, files=None, notes=None, model_class=SRGNN, name="SRGNN"):
    layers = config_layers(name, "retailrocket-synthetic", files, parse_dict(options))
    check_layers(layers, model_class, PROPERTIES_DIR,
                 warn=None if notes is None else notes.append)


@pytest.mark.parametrize("option, value, expected", [
    ("learning_rate", "abc", "learning_rate='abc': expected a number > 0"),
    ("learning_rate", "-1", "learning_rate=-1: expected a number > 0"),
    ("epochs", "abc", "epochs='abc': expected an integer >= 1"),
    ("epochs", "-1", "epochs=-1: expected an integer >= 1"),
    ("epochs", "2.5", "epochs=2.5: expected an integer >= 1"),
    ("train_batch_size", "0", "train_batch_size=0: expected an integer >= 1"),
    ("lr_decay_rate", "1.5", "lr_decay_rate=1.5: expected a number in (0, 1]"),
    ("lr_scheduler", "cosine", "lr_scheduler='cosine': expected one of plateau, step, none"),
    ("embedding_dropout", "1", "embedding_dropout=1: expected a number in [0, 1)"),
    ("threads", "0", "threads=0: expected auto or an integer >= 1"),
    ("valid_metric", "MRR@11", "valid_metric=MRR@11: expected MRR@K with K in topk"),
    ("valid_metric", "Foo@10", "valid_metric=Foo@10: Foo is not among metrics"),
    ("metrics", "['Hit','MRRR']", "unknown metric 'MRRR'; did you mean mrr?"),
    ("topk", "[10,0]", "topk=[10, 0]: expected positive integers"),
    ("learning_rat", "0.01", "learning_rat=0.01: unknown option; did you mean learning_rate?"),
    ("embeding_size", "8", "unknown option; did you mean embedding_size?"),
    ("show_progress", "3", "show_progress=3: expected true or false"),
    ("eval_args", "5", "eval_args=5: expected a mapping"),
])
def test_bad_options_are_one_line_errors(option, value, expected):
    with pytest.raises(InputError) as caught:
        _check({option: value})
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_good_options_pass_and_unknown_far_ones_are_noted():
    notes: list[str] = []
    _check({"learning_rate": "0.01", "epochs": "3", "topk": "[5,10]", "valid_metric": "Hit@5",
            "threads": "auto", "norm_scale": "12", "repeat_recency": "2", "my_own_option": "7",
            "hidden_size": "16", "gpu_id": "0", "metrics": "['Hit','MRR']"}, notes=notes)
    assert notes == ["note: my_own_option is not a RecBole or plugin option; passed on as given"]


def test_a_config_file_is_named(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("train_batch_size: 0\n")
    with pytest.raises(InputError, match=r"config file .*extra.yaml: train_batch_size=0"):
        _check({}, files=[str(extra)])


def test_recbole_models_use_their_own_defaults():
    from recbole.model.sequential_recommender import GRU4Rec

    _check({"num_layers": "2", "dropout_prob": "0.2"}, model_class=GRU4Rec, name="GRU4Rec")
    with pytest.raises(InputError, match="dropout_prob=2: expected a number in"):
        _check({"dropout_prob": "2"}, model_class=GRU4Rec, name="GRU4Rec")
