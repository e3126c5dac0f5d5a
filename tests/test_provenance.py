"""Checksums and data fingerprints of saved files (recbole_srgnn.provenance), without RecBole."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from recbole_srgnn.errors import InputError
from recbole_srgnn.provenance import (
    check_data, content_checksum, data_fingerprint, seal, stats_checksum, verify_seal,
)


def _state() -> dict:
    return {
        "format": "x", "epoch": 3, "best": 0.25, "config": {"lr": 1e-3, "topk": [10, 20]},
        "state_dict": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                       "b": torch.tensor([1, 2], dtype=torch.int64),
                       "h": torch.ones(2, dtype=torch.bfloat16)},
        "optimizer": {"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": [{"lr": 1e-3}]},
    }


def test_checksum_survives_a_weights_only_round_trip(tmp_path):
    path = tmp_path / "s.pth"
    torch.save(seal(_state()), path)
    loaded = torch.load(path, weights_only=True)
    verify_seal(loaded, path)  # no error
    assert loaded["checksum"] == content_checksum(_state())


@pytest.mark.parametrize("change", [
    lambda s: s["state_dict"]["w"].view(-1).__setitem__(4, 4.0000005),  # one float's last bits
    lambda s: s["state_dict"].__setitem__("b", torch.tensor([1, 2], dtype=torch.int32)),  # dtype
    lambda s: s["state_dict"].__setitem__("w", s["state_dict"]["w"].reshape(3, 2)),  # shape
    lambda s: s["config"].__setitem__("lr", 1e-2),  # a plain value
    lambda s: s["config"].__setitem__("topk", [10, "20"]),  # a type
    lambda s: s.pop("epoch"),  # a key
])
def test_any_change_is_refused_with_one_line(change, tmp_path):
    state = seal(_state())
    change(state)
    with pytest.raises(InputError) as caught:
        verify_seal(state, tmp_path / "model.pth")
    message = str(caught.value)
    assert "\n" not in message and "model.pth" in message and "checksum" in message


def test_altered_bytes_on_disk_are_refused(tmp_path):
    path = tmp_path / "s.pth"
    torch.save(seal(_state()), path)
    data = bytearray(path.read_bytes())
    raw = torch.arange(6, dtype=torch.float32).numpy().tobytes()
    at = bytes(data).find(raw)
    assert at > 0  # the tensor's bytes are stored as they are
    data[at + 8] ^= 0x01  # flip one bit of the third float
    path.write_bytes(bytes(data))
    loaded = torch.load(path, weights_only=True)  # torch itself does not notice
    with pytest.raises(InputError, match="damaged or was modified"):
        verify_seal(loaded, path)


def test_unsealed_files_load_as_before(tmp_path):
    verify_seal(_state(), tmp_path / "old.pth")
    check_data(None, {"n_items": 3}, tmp_path / "old.pth")


def _dataset(tokens):
    return SimpleNamespace(iid_field="item_id", field2id_token={"item_id": tokens},
                           item_num=len(tokens))


def test_fingerprint_names_what_differs(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    stats = {"format": "f", "splits": {"train": 10}, "elapsed_s": 1.5,
             "input": {"path": "/a/events.csv", "sha256": "abc"}}
    (folder / "d.stats.json").write_text(json.dumps(stats))
    trained = data_fingerprint(_dataset(["[PAD]", "7", "9"]), tmp_path, "d")
    assert trained["n_items"] == 3 and trained["stats_sha256"]
    check_data(trained, data_fingerprint(_dataset(["[PAD]", "7", "9"]), tmp_path, "d"), "m.pth")

    # converting the same input again, from another folder and at another speed: same data
    (folder / "d.stats.json").write_text(json.dumps(
        {**stats, "elapsed_s": 9.0, "input": {"path": "/b/events.csv", "sha256": "abc"}}))
    check_data(trained, data_fingerprint(_dataset(["[PAD]", "7", "9"]), tmp_path, "d"), "m.pth")

    cases = [
        (_dataset(["[PAD]", "7", "9", "11"]), stats, "3 items, but the dataset now has 4"),
        (_dataset(["[PAD]", "9", "7"]), stats, "items (or their ids) differ"),
        (_dataset(["[PAD]", "7", "9"]), {**stats, "splits": {"train": 11}}, "stats.json differs"),
    ]
    for dataset, written, expected in cases:
        (folder / "d.stats.json").write_text(json.dumps(written))
        with pytest.raises(InputError) as caught:
            check_data(trained, data_fingerprint(dataset, tmp_path, "d"), "m.pth")
        assert expected in str(caught.value) and "\n" not in str(caught.value)
        assert str(caught.value).startswith("m.pth was trained on dataset 'd'")


def test_stats_checksum_of_a_missing_or_broken_file_is_none(tmp_path):
    assert stats_checksum(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert stats_checksum(tmp_path / "bad.json") is None
