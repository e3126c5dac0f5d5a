"""Dataset registry: building and reusing registered datasets, source lookup, options, YAMLs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from recbole_srgnn.data import registry
from recbole_srgnn.data.registry import DATASETS, OPTION_NAMES, prepare_dataset
from recbole_srgnn.data.synthetic import DEFAULT_N_EVENTS, write_events_csv
from recbole_srgnn.errors import InputError

PROPERTIES = Path(__file__).resolve().parents[1] / "recbole_srgnn" / "properties" / "dataset"
RECBOLE_KEYS = ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD", "load_col", "benchmark_filename",
                "alias_of_item_id", "MAX_ITEM_LIST_LENGTH")


@pytest.fixture(autouse=True)
def no_shared_folder(tmp_path, monkeypatch):
    """Tests see no folder of sources unless they ask for it (users need not have one)."""
    monkeypatch.setenv("RECBOLE_SRGNN_SHARED_DATA", str(tmp_path / "no-shared-folder"))


def stats_of(folder: Path) -> dict:
    return json.loads((folder / f"{folder.name}.stats.json").read_text())


def inter_files(folder: Path) -> list[Path]:
    return [folder / f"{folder.name}.{split}.inter" for split in ("train", "valid", "test")]


@pytest.fixture(scope="module")
def synthetic_default(tmp_path_factory):
    data_path = tmp_path_factory.mktemp("data")
    folder = prepare_dataset("retailrocket-synthetic", {"data_path": str(data_path),
                                                       "data_progress": False})
    return data_path, folder


def test_synthetic_default_builds_with_the_intended_size(synthetic_default):
    data_path, folder = synthetic_default
    assert folder == (data_path / "retailrocket-synthetic").resolve()
    assert all(p.is_file() for p in inter_files(folder))
    raw = data_path / "raw" / "retailrocket-synthetic"
    assert (raw / "events.csv").is_file() and (raw / "events.meta.json").is_file()
    stats = stats_of(folder)
    assert stats["raw"]["rows"] == DEFAULT_N_EVENTS
    assert stats["params"]["session_gap"] == 3600 and stats["params"]["min_item_support"] == 5
    splits = stats["splits"]
    # the sizing target: a few thousand items, 60-120k training cases
    assert 2000 <= splits["train"]["items"] <= 4000
    assert 60_000 <= splits["train"]["cases"] <= 120_000
    assert splits["valid"]["cases"] > 2000 and splits["test"]["cases"] > 2000


def test_synthetic_is_reused_and_regenerated_when_arguments_change(synthetic_default, tmp_path):
    data_path, folder = synthetic_default
    config = {"data_path": str(data_path), "data_progress": False}
    raw = data_path / "raw" / "retailrocket-synthetic" / "events.csv"
    watched = [raw] + inter_files(folder)
    before = [p.stat().st_mtime_ns for p in watched]
    assert prepare_dataset("retailrocket-synthetic", config) == folder
    assert [p.stat().st_mtime_ns for p in watched] == before

    # other generator arguments: a new raw file and a new conversion
    other = tmp_path / "data"
    small = prepare_dataset("retailrocket-synthetic", {"data_path": str(other), "data_progress": False,
                                                       "synthetic_n_events": 30_000,
                                                       "synthetic_seed": 4})
    first_stats = stats_of(small)
    assert first_stats["raw"]["rows"] == 30_000
    raw_small = other / "raw" / "retailrocket-synthetic" / "events.csv"
    first_bytes = raw_small.read_bytes()
    again = prepare_dataset("retailrocket-synthetic", {"data_path": str(other), "data_progress": False,
                                                       "synthetic_n_events": 30_000,
                                                       "synthetic_seed": 5})
    assert raw_small.read_bytes() != first_bytes
    assert stats_of(again)["input"]["sha256"] != first_stats["input"]["sha256"]
    # a damaged raw file (size differs from the record) is regenerated
    raw_small.write_bytes(raw_small.read_bytes()[:-10])
    prepare_dataset("retailrocket-synthetic", {"data_path": str(other), "data_progress": False,
                                               "synthetic_n_events": 30_000, "synthetic_seed": 5})
    assert sum(1 for _ in open(raw_small)) == 30_001


def test_recbole_loads_the_synthetic_dataset_with_its_yaml(synthetic_default):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    data_path, folder = synthetic_default
    settings = yaml.safe_load((PROPERTIES / "retailrocket-synthetic.yaml").read_text())
    settings.update({"data_path": str(data_path), "train_neg_sample_args": None,
                     "eval_args": {"order": "TO", "mode": "full"}, "device": "cpu",
                     "use_gpu": False, "show_progress": False, "save_dataset": False,
                     "save_dataloaders": False, "checkpoint_dir": str(data_path / "saved")})
    config = Config(model="GRU4Rec", dataset="retailrocket-synthetic", config_dict=settings)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    splits = stats_of(folder)["splits"]
    assert len(train.dataset) == splits["train"]["cases"]
    assert len(valid.dataset) == splits["valid"]["cases"]
    assert len(test.dataset) == splits["test"]["cases"]
    assert int(test.dataset.inter_feat["item_length"].max()) <= 50


def test_unregistered_name_gives_none(tmp_path):
    assert prepare_dataset("ml-100k", {"data_path": str(tmp_path)}) is None
    assert not any(tmp_path.iterdir())


def test_full_retailrocket_absent_says_how_to_get_it(tmp_path):
    with pytest.raises(InputError) as info:
        prepare_dataset("retailrocket", {"data_path": str(tmp_path)})
    message = str(info.value)
    assert "kaggle.com" in message and "source_path" in message
    assert str(tmp_path / "raw" / "retailrocket" / "events.csv") in message
    assert not (tmp_path / "retailrocket").exists()


@pytest.mark.parametrize("name, expected", [
    ("retailrocket-sample", "raw/retailrocket-sample/events.csv"),
    ("retailrocket-cotrec", "raw/retailrocket-cotrec"),
])
def test_real_sources_absent_say_where_to_put_them(tmp_path, name, expected):
    with pytest.raises(InputError, match="--source_path") as info:
        prepare_dataset(name, {"data_path": str(tmp_path)})
    assert expected in str(info.value)
    assert not (tmp_path / name).exists()


def test_source_path_missing_or_wrong_kind(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        prepare_dataset("retailrocket", {"data_path": str(tmp_path),
                                         "source_path": str(tmp_path / "nope.csv")})
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        prepare_dataset("retailrocket-cotrec", {"data_path": str(tmp_path),
                                                "source_path": str(tmp_path / "a.txt")})
    with pytest.raises(InputError, match="is not an events.csv"):
        prepare_dataset("retailrocket-sample", {"data_path": str(tmp_path),
                                                "source_path": str(tmp_path)})


@pytest.fixture(scope="module")
def small_events(tmp_path_factory) -> Path:
    return write_events_csv(tmp_path_factory.mktemp("src") / "events.csv", n_events=40_000, seed=9)


def test_source_path_is_honoured_file_or_folder(tmp_path, small_events):
    folder = prepare_dataset("retailrocket", {"data_path": str(tmp_path), "data_progress": False,
                                              "source_path": str(small_events)})
    assert folder == (tmp_path / "retailrocket").resolve()
    stats = stats_of(folder)
    assert stats["input"]["path"] == str(small_events.resolve())
    assert stats["raw"]["rows"] == 40_000
    # the folder holding events.csv works too (and reuses the conversion)
    again = prepare_dataset("retailrocket", {"data_path": str(tmp_path), "data_progress": False,
                                             "source_path": str(small_events.parent)})
    assert again == folder and stats_of(again) == stats
    assert not (tmp_path / "raw").exists()  # the source is read where it is, never copied


def test_local_raw_folder_is_used(tmp_path, small_events):
    local = tmp_path / "raw" / "retailrocket" / "events.csv"
    local.parent.mkdir(parents=True)
    local.write_bytes(small_events.read_bytes())
    folder = prepare_dataset("retailrocket", {"data_path": str(tmp_path), "data_progress": False})
    assert stats_of(folder)["input"]["path"] == str(local.resolve())


def test_options_preset_and_overrides(tmp_path, small_events):
    base = {"data_path": str(tmp_path), "data_progress": False, "source_path": str(small_events)}
    params = stats_of(prepare_dataset("retailrocket", dict(base, preset="hidasi-gru4rec")))["params"]
    assert params["dedup_consecutive"] is True and params["session_gap"] == 3600
    params = stats_of(prepare_dataset("retailrocket", dict(base, preset="ludewig2021",
                                                           min_item_support=3)))["params"]
    assert params["session_gap"] == 1800 and params["min_item_support"] == 3
    # options given as None (the YAMLs' "~") are not set; keep_events may come as a list
    params = stats_of(prepare_dataset("retailrocket", dict(
        base, session_gap=None, keep_events=["view", "addtocart"], MAX_ITEM_LIST_LENGTH=20)))["params"]
    assert params["session_gap"] == 3600 and params["keep_events"] == ["view", "addtocart"]
    assert params["max_prefix_length"] == 20  # follows MAX_ITEM_LIST_LENGTH unless set
    params = stats_of(prepare_dataset("retailrocket", dict(base, MAX_ITEM_LIST_LENGTH=20,
                                                           max_prefix_length=0)))["params"]
    assert params["max_prefix_length"] == 0
    with pytest.raises(InputError, match="unknown preset"):
        prepare_dataset("retailrocket", dict(base, preset="nope"))
    with pytest.raises(InputError, match="session_gap"):
        prepare_dataset("retailrocket", dict(base, session_gap=-1))


def test_options_that_do_not_apply_are_refused(tmp_path, small_events):
    with pytest.raises(InputError, match="source_path does not apply"):
        prepare_dataset("retailrocket-synthetic", {"data_path": str(tmp_path),
                                                   "source_path": str(small_events)})
    with pytest.raises(InputError, match="valid_fraction"):
        prepare_dataset("retailrocket", {"data_path": str(tmp_path), "valid_fraction": 0.2,
                                         "source_path": str(small_events)})
    with pytest.raises(InputError, match="session_gap"):
        prepare_dataset("retailrocket-cotrec", {"data_path": str(tmp_path), "session_gap": 1800})
    with pytest.raises(InputError, match="synthetic_seed"):
        prepare_dataset("retailrocket", {"data_path": str(tmp_path), "synthetic_seed": 3,
                                         "source_path": str(small_events)})


def _presplit_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    sessions = [[1, 2, 3], [2, 3, 4, 5], [5, 1], [3, 3, 2], [4, 2, 1], [1, 5, 2],
                [2, 4], [5, 3, 1], [1, 2], [3, 4, 5, 1]]
    (folder / "train_sessions.txt").write_text("".join(" ".join(map(str, s)) + "\n" for s in sessions))
    (folder / "test.tsv").write_text("session_id\ttimestamp\tprefix\ttarget\n"
                                     "7\t1441940600\t1 2\t3\n7\t1441940600\t1 2 3\t4\n"
                                     "8\t1441940700\t5 5\t2\n")
    return folder


def test_cotrec_from_source_path_and_local_raw(tmp_path):
    source = _presplit_folder(tmp_path / "elsewhere")
    folder = prepare_dataset("retailrocket-cotrec", {"data_path": str(tmp_path / "d1"),
                                                     "source_path": str(source),
                                                     "valid_fraction": 0.2, "data_progress": False})
    stats = stats_of(folder)
    assert stats["source"]["path"] == str(source.resolve())
    assert stats["splits"]["valid"]["sessions"] == 2 and stats["splits"]["test"]["cases"] == 3
    assert stats["params"] == {"valid_fraction": 0.2, "max_prefix_length": 50}

    local = _presplit_folder(tmp_path / "d2" / "raw" / "retailrocket-cotrec")
    folder = prepare_dataset("retailrocket-cotrec", {"data_path": str(tmp_path / "d2"),
                                                     "data_progress": False,
                                                     "MAX_ITEM_LIST_LENGTH": 2})
    stats = stats_of(folder)
    assert stats["source"]["path"] == str(local.resolve())
    assert stats["params"] == {"valid_fraction": 0.1, "max_prefix_length": 2}


def test_the_folder_of_the_variable_is_the_last_resort(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv(registry.SOURCES_ENV, str(shared_data))
    folder = prepare_dataset("retailrocket-sample", {"data_path": str(tmp_path), "data_progress": False})
    stats = stats_of(folder)
    assert stats["input"]["path"] == str((shared_data / "retailrocket-sample" / "events.csv").resolve())
    # the sample's own defaults: support >= 2, 14 + 14 days
    assert stats["params"]["min_item_support"] == 2
    assert stats["params"]["test_days"] == 14 and stats["params"]["valid_days"] == 14
    assert all(stats["splits"][s]["cases"] > 0 for s in ("train", "valid", "test"))
    # an explicit source_path still wins over the variable's folder
    local = tmp_path / "mine" / "events.csv"
    local.parent.mkdir()
    write_events_csv(local, n_events=5000, seed=1)
    mine = prepare_dataset("retailrocket-sample", {"data_path": str(tmp_path / "d"),
                                                   "source_path": str(local), "data_progress": False})
    assert stats_of(mine)["input"]["path"] == str(local.resolve())


def test_the_team_folder_next_to_the_checkout_is_not_searched(tmp_path, monkeypatch):
    """Users have no ../shared/data: without the variable the product looks only where the docs
    say (source_path, <data_path>/raw/<name>/), even where that folder exists."""
    team = Path(__file__).resolve().parents[2] / "shared" / "data" / "retailrocket-sample"
    if not (team / "events.csv").is_file():
        pytest.skip(f"{team} is absent: nothing to be found by mistake")
    monkeypatch.delenv(registry.SOURCES_ENV)
    assert registry.sources_dir() is None
    with pytest.raises(InputError, match="needs its source") as info:
        prepare_dataset("retailrocket-sample", {"data_path": str(tmp_path), "data_progress": False})
    assert "shared" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(registry.SOURCES_ENV, "  ")  # blank = unset
    assert registry.sources_dir() is None


# ------------------------------------------------------------------------------------- the YAMLs

def _yaml(name: str) -> dict:
    return yaml.safe_load((PROPERTIES / f"{name}.yaml").read_text())


def test_every_registered_dataset_has_a_yaml_with_consistent_fields():
    reference = {key: _yaml("retailrocket-synthetic")[key] for key in RECBOLE_KEYS}
    assert reference["load_col"] == {"inter": ["session_id", "item_id_list", "item_id", "timestamp"]}
    assert reference["benchmark_filename"] == ["train", "valid", "test"]
    for name, spec in DATASETS.items():
        settings = _yaml(name)
        assert {key: settings[key] for key in RECBOLE_KEYS} == reference, name
        if spec.kind == "presplit":
            assert settings["valid_fraction"] == 0.1
            assert not set(OPTION_NAMES[:-1]) & set(settings)
        else:
            assert set(OPTION_NAMES) | {"preset"} <= set(settings), name
        for key, value in spec.defaults.items():  # dataset defaults are visible in its YAML
            assert settings[key] == value, (name, key)
    assert _yaml("retailrocket-synthetic")["synthetic_n_events"] == DEFAULT_N_EVENTS


def test_every_yaml_key_has_a_comment():
    for path in sorted(PROPERTIES.glob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.match(r"^[A-Za-z_]\w*:", line):
                assert re.search(r"\s#\s\S", line), f"{path.name}:{number} has no comment: {line}"
