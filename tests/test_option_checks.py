"""Options checked before any work (recbole_srgnn.training.option_checks), on the real property files."""

from __future__ import annotations

import pytest

from recbole_srgnn.errors import InputError
from recbole_srgnn.model.srgnn import SRGNN
from recbole_srgnn.training.option_checks import check_layers
from recbole_srgnn.training.config import PROPERTIES_DIR, config_layers, parse_dict


def _check(options: dict, files=None, notes=None, model_class=SRGNN, name="SRGNN"):
    layers = config_layers(name, "retailrocket-synthetic", files, parse_dict(options))
    check_layers(layers, model_class, PROPERTIES_DIR,
                 warn=None if notes is None else notes.append)


@pytest.mark.parametrize("option, value, expected", [
    ("learning_rate", "abc", "learning_rate must be a number >= 0, got 'abc'"),
    ("learning_rate", "-1", "learning_rate must be a number >= 0, got -1"),
    ("epochs", "abc", "epochs must be an integer >= 1, got 'abc'"),
    ("epochs", "-1", "epochs must be an integer >= 1, got -1"),
    ("epochs", "2.5", "epochs must be an integer >= 1, got 2.5"),
    ("train_batch_size", "0", "train_batch_size must be an integer >= 1, got 0"),
    ("lr_decay_rate", "1.5", "lr_decay_rate must be a number in (0, 1], got 1.5"),
    ("lr_scheduler", "cosine", "lr_scheduler must be one of plateau, step, none, got 'cosine'"),
    ("embedding_dropout", "1", "embedding_dropout must be a number in [0, 1), got 1"),
    ("threads", "0", "threads must be auto or an integer >= 1, got 0"),
    ("valid_metric", "MRR@11", "valid_metric must be MRR@K with K in topk"),
    ("valid_metric", "Foo@10", "valid_metric Foo@10: Foo is not among metrics"),
    ("metrics", "['Hit','MRRR']", "unknown metric 'MRRR'; did you mean mrr?"),
    ("topk", "[10,0]", "topk must be positive integers, e.g. [10, 20], got [10, 0]"),
    ("learning_rat", "0.01", "unknown option learning_rat; did you mean learning_rate?"),
    ("embeding_size", "8", "unknown option embeding_size; did you mean embedding_size?"),
    ("show_progress", "3", "show_progress must be true or false, got 3"),
    ("eval_args", "5", "eval_args must be a mapping"),
    ("dataset_save_path", "x.pth", "dataset_save_path is not supported: RecBole would unpickle"),
    ("dataloaders_save_path", "x.pth", "dataloaders_save_path is not supported"),
    ("save_dataset", "True", "save_dataset is not supported: RecBole would unpickle that file "
                             "without restriction; use prepared_data_path"),
    ("save_dataloaders", "True", "save_dataloaders is not supported"),
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
    with pytest.raises(InputError, match=r"config file .*extra.yaml: train_batch_size must be an integer >= 1, got 0"):
        _check({}, files=[str(extra)])


def test_recbole_models_use_their_own_defaults():
    from recbole.model.sequential_recommender import GRU4Rec

    _check({"num_layers": "2", "dropout_prob": "0.2"}, model_class=GRU4Rec, name="GRU4Rec")
    with pytest.raises(InputError, match="dropout_prob must be a number in"):
        _check({"dropout_prob": "2"}, model_class=GRU4Rec, name="GRU4Rec")
