"""Importer of pre-split session data: both input forms, the split, safety, bad input, caching,
and the real COTREC split evaluated by RecBole on exactly its published test cases."""

from __future__ import annotations

import collections
import json
import os
import pickle
from pathlib import Path

import pytest

from recbole_srgnn.data.benchmark_files import HEADER
from recbole_srgnn.data.presplit import import_presplit, output_paths
from recbole_srgnn.safe_pickle import RestrictedUnpickler
from recbole_srgnn.errors import InputError

TRAIN = [
    [1, 2, 3],
    [2, 2],
    [4, 5, 6, 7],
    [1],          # a one-item session gives no case
    [3, 1, 2],
    [5, 6],
    [7, 4, 4, 5],
    [6, 1, 2, 3, 4],
    [2, 3],
    [1, 5],
]
# (session id, unix seconds, prefix, target), in a deliberately mixed order
TEST = [
    ("900", 1441940600, [1, 2, 3], 4),
    ("900", 1441940600, [1, 2], 3),
    ("17", 1441940543, [5, 6, 7, 1, 2], 3),
    ("17", 1441940543, [5, 6, 7, 1], 2),
    ("17", 1441940543, [5, 6, 7], 1),
    ("42", 1441940700, [4, 4], 4),
]


def read_inter(path: Path) -> list[tuple[str, tuple[int, ...], int, str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] + "\n" == HEADER
    assert lines[-1] == ""
    rows = []
    for line in lines[1:-1]:
        sid, prefix, target, stamp = line.split("\t")
        rows.append((sid, tuple(int(i) for i in prefix.split(" ")), int(target), stamp))
    return rows


def write_text_source(folder: Path, train=TRAIN, test=TEST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_sessions.txt").write_text(
        "".join(" ".join(map(str, s)) + "\n" for s in train), encoding="utf-8")
    (folder / "test.tsv").write_text(
        "session_id\ttimestamp\tprefix\ttarget\n"
        + "".join(f"{sid}\t{ts}\t{' '.join(map(str, p))}\t{t}\n" for sid, ts, p, t in test),
        encoding="utf-8")
    return folder


def write_pickle_source(folder: Path, test_tuple, train=TRAIN) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "all_train_seq.txt", "wb") as handle:
        pickle.dump(train, handle)
    with open(folder / "test.txt", "wb") as handle:
        pickle.dump(test_tuple, handle)
    return folder


def expected_session_cases(sessions):
    """(prefix, target) of every session, n - 1 cases each, oldest first."""
    out = []
    for s in sessions:
        for k in range(1, len(s)):
            out.append((tuple(s[:k]), s[k]))
    return out


def test_text_source_gives_published_test_cases_and_session_splits(tmp_path):
    source = write_text_source(tmp_path / "src")
    out = tmp_path / "data" / "toy"
    stats = import_presplit(source, out, valid_fraction=0.2, max_prefix_length=3, progress=False)
    paths = output_paths(out)
    assert [p.name for p in paths.values()] == [
        "toy.train.inter", "toy.valid.inter", "toy.test.inter", "toy.stats.json"]

    train = read_inter(paths["train"])
    valid = read_inter(paths["valid"])
    test = read_inter(paths["test"])

    # valid = last 2 of 10 sessions (file order), train = the first 8
    def truncated(cases, k=3):
        return [(p[-k:], t) for p, t in cases]
    assert [(p, t) for _, p, t, _ in train] == truncated(expected_session_cases(TRAIN[:8]))
    assert [(p, t) for _, p, t, _ in valid] == truncated(expected_session_cases(TRAIN[8:]))
    # ids: t<k>/v<k> with k = 1-based line of the training file
    assert [sid for sid, *_ in valid] == ["v9", "v10"]
    assert {sid for sid, *_ in train} == {"t1", "t2", "t3", "t5", "t6", "t7", "t8"}
    # placeholder timestamps: 0-based position of the target event in the training file
    assert [stamp for *_, stamp in train[:3]] == ["1.000", "2.000", "4.000"]
    assert valid[0][3] == f"{sum(map(len, TRAIN[:8])) + 1}.000"

    # test: the published cases, one row each, most recent 3 items, grouped by session in order
    # of first appearance and by prefix length within a session; the file's ids and times
    assert test == [
        ("900", (1, 2), 3, "1441940600.000"),
        ("900", (1, 2, 3), 4, "1441940600.000"),
        ("17", (5, 6, 7), 1, "1441940543.000"),
        ("17", (6, 7, 1), 2, "1441940543.000"),
        ("17", (7, 1, 2), 3, "1441940543.000"),
        ("42", (4, 4), 4, "1441940700.000"),
    ]
    assert stats["splits"]["test"] == {"sessions": 3, "cases": 6, "items": 7,
                                       "max_prefix_length_seen": 5, "prefixes_truncated": 2}
    assert stats["splits"]["train"]["sessions"] == 8 and stats["splits"]["valid"]["sessions"] == 2
    assert stats["splits"]["train"]["cases"] == len(train) == 2 + 1 + 3 + 0 + 2 + 1 + 3 + 4
    assert stats["reused"] is False
    recorded = json.loads(paths["stats"].read_text())
    assert recorded == {k: v for k, v in stats.items() if k != "reused"}
    assert recorded["files"]["test"] == {"name": "toy.test.inter", "rows": 6,
                                         "bytes": paths["test"].stat().st_size}


def test_keep_whole_prefixes_with_zero(tmp_path):
    source = write_text_source(tmp_path / "src")
    out = tmp_path / "toy"
    import_presplit(source, out, valid_fraction=0.2, max_prefix_length=0, progress=False)
    test = read_inter(output_paths(out)["test"])
    assert collections.Counter((p, t) for _, p, t, _ in test) == collections.Counter(
        (tuple(p), t) for _, _, p, t in TEST)


def test_pickle_source_plain_tuple(tmp_path):
    prefixes = [p for _, _, p, _ in TEST]
    targets = [t for *_, t in TEST]
    source = write_pickle_source(tmp_path / "src", (prefixes, targets))
    out = tmp_path / "toy"
    stats = import_presplit(source, out, valid_fraction=0.2, max_prefix_length=50, progress=False)
    assert stats["source"]["format"] == "pickle"
    test = read_inter(output_paths(out)["test"])
    # no ids in the file: one id per case, x<k>, in file order; placeholder times after train
    n_events = sum(map(len, TRAIN))
    assert [(sid, list(p), t, stamp) for sid, p, t, stamp in test] == [
        (f"x{k + 1}", p, t, f"{n_events + k}.000") for k, (p, t) in enumerate(zip(prefixes, targets))]
    # the same training part as the text form
    text_out = tmp_path / "text"
    import_presplit(write_text_source(tmp_path / "srct"), text_out, valid_fraction=0.2,
                    progress=False)
    for part in ("train", "valid"):
        assert output_paths(out)[part].read_bytes() == output_paths(text_out)[part].read_bytes()


def test_pickle_source_with_ids_and_times(tmp_path):
    prefixes = [p for _, _, p, _ in TEST]
    targets = [t for *_, t in TEST]
    ids = [int(sid) for sid, *_ in TEST]
    times = [float(ts) for _, ts, _, _ in TEST]
    # timestamps first, ids second: told apart by their values
    source = write_pickle_source(tmp_path / "src", (prefixes, targets, times, ids))
    import_presplit(source, tmp_path / "toy", valid_fraction=0.2, max_prefix_length=3,
                    progress=False)
    text_source = write_text_source(tmp_path / "srct")
    import_presplit(text_source, tmp_path / "toy2" / "toy", valid_fraction=0.2,
                    max_prefix_length=3, progress=False)
    assert (output_paths(tmp_path / "toy")["test"].read_bytes()
            == output_paths(tmp_path / "toy2" / "toy")["test"].read_bytes())


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("which", ["train", "test"])
def test_malicious_pickle_is_refused(tmp_path, which):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    train = TRAIN if which == "test" else [[1, 2], evil]
    test = ([[1, 2]], [3]) if which == "train" else ([[1, 2]], [evil])
    source = write_pickle_source(tmp_path / "src", test, train=train)
    out = tmp_path / "toy"
    with pytest.raises(InputError, match="refusing to load global"):
        import_presplit(source, out, progress=False)
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())
    # sanity: the plain pickle module would have run the command
    with open(source / ("all_train_seq.txt" if which == "train" else "test.txt"), "rb") as handle:
        pickle.load(handle)
    assert marker.exists()


def test_restricted_unpickler_refuses_every_global():
    import io
    for payload in (pickle.dumps(set), pickle.dumps(collections.OrderedDict()),
                    pickle.dumps(print)):
        with pytest.raises(pickle.UnpicklingError):
            RestrictedUnpickler(io.BytesIO(payload)).load()
    assert RestrictedUnpickler(io.BytesIO(pickle.dumps(([[1, 2]], [3], ["a"], [None])))).load() \
        == ([[1, 2]], [3], ["a"], [None])


def _bad_text(name: str, text: str):
    def make(folder: Path) -> None:
        write_text_source(folder)
        (folder / name).write_text(text, encoding="utf-8")
    return make


def _bad_pickle(train, test):
    def make(folder: Path) -> None:
        write_pickle_source(folder, test, train=train)
    return make


def _remove(name: str):
    def make(folder: Path) -> None:
        write_text_source(folder)
        (folder / name).unlink()
    return make


BAD_SOURCES = {
    "no train file": (_remove("train_sessions.txt"), "holds neither"),
    "no test file": (_remove("test.tsv"), "holds neither"),
    "empty train": (_bad_text("train_sessions.txt", ""), "empty"),
    "blank line": (_bad_text("train_sessions.txt", "1 2\n\n3 4\n"), "line 2 is empty"),
    "letters": (_bad_text("train_sessions.txt", "1 2\n3 x\n"), "'x' is not"),
    "float id": (_bad_text("train_sessions.txt", "1 2\n3 4.0\n"), "'4.0' is not"),
    "negative id": (_bad_text("train_sessions.txt", "1 -2\n3 4\n"), "'-2' is not"),
    "empty test": (_bad_text("test.tsv", ""), "empty"),
    "header only": (_bad_text("test.tsv", "session_id\ttimestamp\tprefix\ttarget\n"), "no test cases"),
    "wrong header": (_bad_text("test.tsv", "sid\tts\tprefix\ttarget\n1\t1\t1 2\t3\n"), "header"),
    "three fields": (_bad_text("test.tsv", "session_id\ttimestamp\tprefix\ttarget\n1\t1 2\t3\n"),
                     "4 tab-separated"),
    "empty prefix": (_bad_text("test.tsv", "session_id\ttimestamp\tprefix\ttarget\n1\t5\t\t3\n"),
                     "empty prefix"),
    "bad time": (_bad_text("test.tsv", "session_id\ttimestamp\tprefix\ttarget\n1\tnow\t1 2\t3\n"),
                 "timestamp"),
    "two targets": (_bad_text("test.tsv", "session_id\ttimestamp\tprefix\ttarget\n1\t5\t1 2\t3 4\n"),
                    "one item id"),
    "clashing id": (_bad_text("test.tsv", "session_id\ttimestamp\tprefix\ttarget\nt1\t5\t1 2\t3\n"),
                    "clash"),
    "pickle not a list": (_bad_pickle({"a": 1}, ([[1]], [2])), "dict"),
    "pickle float id": (_bad_pickle([[1, 2.0]], ([[1]], [2])), "float"),
    "pickle str id": (_bad_pickle([[1, "2"]], ([[1]], [2])), "not a non-negative"),
    "pickle bool id": (_bad_pickle([[1, True]], ([[1]], [2])), "bool"),
    "pickle mismatch": (_bad_pickle(TRAIN, ([[1], [2]], [2])), "2 prefixes but 1 targets"),
    "pickle empty prefix": (_bad_pickle(TRAIN, ([[1], []], [2, 3])), "prefix 2"),
    "pickle set": (_bad_pickle(TRAIN, ([[1]], {2})), "set"),
    "pickle bytes": (_bad_pickle(TRAIN, ([[1]], [2], [b"x"])), "bytes"),
    "pickle truncated": (lambda f: (write_pickle_source(f, ([[1]], [2])),
                                    (f / "test.txt").write_bytes(pickle.dumps(([[1]], [2]))[:-3])),
                         "not a pickle"),
    "pickle two id columns": (_bad_pickle(TRAIN, ([[1]], [2], ["a"], ["b"])), "cannot tell"),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_bad_input_raises_and_writes_nothing(tmp_path, case):
    make, message = BAD_SOURCES[case]
    source = tmp_path / "src"
    source.mkdir()
    make(source)
    out = tmp_path / "out" / "toy"
    with pytest.raises(InputError, match=message):
        import_presplit(source, out, valid_fraction=0.2, progress=False)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"valid_fraction": 0.0}, "valid_fraction"),
    ({"valid_fraction": 1.0}, "valid_fraction"),
    ({"valid_fraction": 0.01}, "empty training or validation"),
    ({"max_prefix_length": -1}, "max_prefix_length"),
    ({"max_prefix_length": 2.5}, "max_prefix_length"),
    ({"train_sample": 0.0}, "train_sample"),
    ({"train_sample": 1.5}, "train_sample"),
    ({"train_sample": "half"}, "train_sample"),
    ({"train_sample": 0.5, "train_sample_seed": 1.5}, "train_sample_seed"),
])
def test_bad_parameters(tmp_path, kwargs, message):
    source = write_text_source(tmp_path / "src")
    with pytest.raises(InputError, match=message):
        import_presplit(source, tmp_path / "toy", progress=False, **kwargs)
    assert not (tmp_path / "toy").exists() or list((tmp_path / "toy").iterdir()) == []


def test_train_sample_keeps_a_seeded_share_of_sessions_and_every_test_case(tmp_path):
    source = write_text_source(tmp_path / "src")
    full = import_presplit(source, tmp_path / "full", valid_fraction=0.2, progress=False)
    half = import_presplit(source, tmp_path / "half", valid_fraction=0.2, train_sample=0.5,
                           train_sample_seed=3, progress=False)
    again = import_presplit(source, tmp_path / "again", valid_fraction=0.2, train_sample=0.5,
                            train_sample_seed=3, progress=False)
    other = import_presplit(source, tmp_path / "other", valid_fraction=0.2, train_sample=0.5,
                            train_sample_seed=4, progress=False)
    sessions = half["splits"]["train"]["sessions"] + half["splits"]["valid"]["sessions"]
    assert sessions == 5 and full["splits"]["train"]["sessions"] == 8
    cases = [sorted((p, t) for _, p, t, _ in read_inter(output_paths(tmp_path / name)[split]))
             for name in ("half", "again", "other") for split in ("train", "valid")]
    assert cases[:2] == cases[2:4]  # same seed, same sample
    assert cases[:2] != cases[4:]   # another seed, another sample (for these 10 sessions)
    # the sampled sessions' cases are those of 5 of the original sessions, in file order
    kept = [(p, t) for _, p, t, _ in read_inter(output_paths(tmp_path / "half")["train"])] + \
        [(p, t) for _, p, t, _ in read_inter(output_paths(tmp_path / "half")["valid"])]
    originals = [expected_session_cases([s]) for s in TRAIN]
    flat = [case for session in originals for case in session]
    positions = [flat.index(case) for case in kept]
    assert positions == sorted(positions)
    # every published test case is kept, byte for byte
    assert output_paths(tmp_path / "half")["test"].read_bytes() == \
        output_paths(tmp_path / "full")["test"].read_bytes()
    assert half["params"] == {"valid_fraction": 0.2, "max_prefix_length": 50,
                              "train_sample": 0.5, "train_sample_seed": 3}
    assert "train_sample" not in full["params"]  # imports made before the option stay valid


def test_missing_or_file_source(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        import_presplit(tmp_path / "nope", tmp_path / "toy", progress=False)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        import_presplit(tmp_path / "a_file", tmp_path / "toy", progress=False)


def test_valid_needs_cases(tmp_path):
    source = write_text_source(tmp_path / "src", train=[[1, 2], [3, 4], [5]])
    with pytest.raises(InputError, match="both must be non-empty"):
        import_presplit(source, tmp_path / "toy", valid_fraction=0.3, progress=False)


def test_cache_reuse_force_and_invalidation(tmp_path):
    source = write_text_source(tmp_path / "src")
    out = tmp_path / "toy"
    paths = output_paths(out)
    first = import_presplit(source, out, valid_fraction=0.2, progress=False)
    stamps = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    # same inputs and parameters: nothing rewritten, same stats
    os.utime(paths["train"], ns=(1, 1))
    again = import_presplit(source, out, valid_fraction=0.2, progress=False)
    assert again["reused"] is True and first["reused"] is False
    drop = ("reused", "elapsed_s")
    assert {k: v for k, v in again.items() if k not in drop} == \
        {k: v for k, v in first.items() if k not in drop}
    assert paths["train"].stat().st_mtime_ns == 1
    # force rebuilds
    import_presplit(source, out, valid_fraction=0.2, force=True, progress=False)
    assert paths["train"].stat().st_mtime_ns != 1
    # different parameters rebuild
    other = import_presplit(source, out, valid_fraction=0.3, progress=False)
    assert other["params"]["valid_fraction"] == 0.3
    assert other["splits"]["valid"]["sessions"] == 3
    # changed input rebuilds
    write_text_source(source, train=TRAIN + [[8, 9]])
    changed = import_presplit(source, out, valid_fraction=0.3, progress=False)
    assert changed["inputs"] != other["inputs"]
    assert changed["splits"]["train"]["sessions"] + changed["splits"]["valid"]["sessions"] == 11
    # a missing or damaged output file rebuilds
    paths["valid"].unlink()
    assert import_presplit(source, out, valid_fraction=0.3, progress=False)["reused"] is False
    assert paths["valid"].is_file()
    with open(paths["test"], "a") as handle:
        handle.write("junk\n")
    assert import_presplit(source, out, valid_fraction=0.3, progress=False)["reused"] is False
    assert "junk" not in paths["test"].read_text()
    assert set(stamps) == set(paths)


# ------------------------------------------------------------------------ real COTREC split

@pytest.fixture(scope="module")
def cotrec(shared_data, tmp_path_factory):
    source = shared_data / "retailrocket-cotrec"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    out = tmp_path_factory.mktemp("data") / "retailrocket-cotrec"
    stats = import_presplit(source, out, progress=False)
    return source, out, stats


def _published_cases(source: Path):
    rows = []
    lines = (source / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["session_id", "timestamp", "prefix", "target"]
    for line in lines[1:]:
        sid, stamp, prefix, target = line.split("\t")
        rows.append((sid, int(stamp), tuple(int(i) for i in prefix.split()), int(target)))
    return rows


def test_cotrec_test_file_holds_exactly_the_published_cases(cotrec):
    source, out, stats = cotrec
    published = _published_cases(source)
    written = read_inter(output_paths(out)["test"])
    assert len(published) == len(written) == 15132
    assert stats["splits"]["test"]["cases"] == 15132
    assert stats["splits"]["test"]["sessions"] == 4735

    long = [r for r in published if len(r[2]) > 50]
    assert len(long) == stats["splits"]["test"]["prefixes_truncated"] == 228
    # whole prefixes (<= 50) compare whole; longer ones by their most recent 50 items
    expected = collections.Counter((sid, p[-50:], t, f"{ts}.000") for sid, ts, p, t in published)
    assert collections.Counter(written) == expected
    assert all(len(p) <= 50 for _, p, _, _ in written)
    assert min(len(p) for _, p, _, _ in written) == 2  # no one-item prefix was added

    # train/valid: every training session of n items gives n - 1 cases, valid = last 10 %
    sessions = (source / "train_sessions.txt").read_text().split("\n")[:-1]
    lengths = [len(s.split()) for s in sessions]
    n_valid = round(len(sessions) * 0.1)
    assert stats["splits"]["valid"]["sessions"] == n_valid == 12617
    assert stats["splits"]["train"]["cases"] == sum(n - 1 for n in lengths[:-n_valid])
    assert stats["splits"]["valid"]["cases"] == sum(n - 1 for n in lengths[-n_valid:])
    assert stats["items"] == 36968


def test_recbole_evaluates_exactly_the_published_cases(cotrec):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    source, out, _ = cotrec
    config = Config(model="GRU4Rec", dataset=out.name, config_dict={
        "data_path": str(out.parent),
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "USER_ID_FIELD": "session_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["session_id", "item_id_list", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50,
        "train_neg_sample_args": None,
        "eval_args": {"order": "TO", "mode": "full"},
        "device": "cpu", "use_gpu": False, "show_progress": False,
        "save_dataset": False, "save_dataloaders": False,
        "checkpoint_dir": str(out.parent / "saved"),
    })
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    assert len(test.dataset) == 15132
    assert len(valid.dataset) == json.loads(output_paths(out)["stats"].read_text())[
        "splits"]["valid"]["cases"]

    inter = test.dataset.inter_feat
    item_tokens = dataset.field2id_token["item_id"]
    lists = inter["item_id_list"].numpy()
    lengths = inter["item_length"].numpy()
    targets = item_tokens[inter["item_id"].numpy()]
    seen = collections.Counter(
        (tuple(int(i) for i in item_tokens[row[:n]]), int(t))
        for row, n, t in zip(lists, lengths, targets))
    expected = collections.Counter((p[-50:], t) for _, _, p, t in _published_cases(source))
    assert seen == expected
