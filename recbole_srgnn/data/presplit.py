"""Import pre-split session data (the COTREC/DHCN Retail Rocket split) as RecBole benchmark files.

Input: a folder holding one of two forms of the same data, text files or the public release's
pickles (``presplit_input``: the formats and every check of them).

Output in ``out_dir`` (``name`` = the folder's name): ``name.train.inter``, ``name.valid.inter``,
``name.test.inter`` (pre-augmented benchmark files, see ``benchmark_files``) and
``name.stats.json``, written atomically, the stats file last. The split:

- test: exactly the published cases, one row each, in the file's order of sessions and, within
  a session, by prefix length (time order); the prefix keeps its most recent
  ``max_prefix_length`` items (0 = all). No case is added or dropped (the published test
  sessions give no case with a one-item prefix, and none is made up);
- valid: the last ``valid_fraction`` of the training sessions in file order (rounded to the
  nearest session count), every session of n items giving its n - 1 cases;
- train: the other training sessions, likewise.

``train_sample`` (default 1.0 = all) keeps a random share of the training file's sessions
before that split (drawn with ``train_sample_seed``, file order kept): a smaller training set
evaluated on exactly the same test cases, e.g. to see how a model or schedule behaves on less
data. Test targets that the sample no longer contains stay in the test split (they count as
misses for every model) and are counted in the stats (``test_targets_not_in_train``).

Session ids (token field): training sessions are ``t<k>`` and validation sessions ``v<k>``, where
k is the session's 1-based position in the training file; test rows keep the test file's own
ids, or ``x<k>`` (k = 1-based case position) where the file has none.

Timestamps (``timestamp:float``, seconds): test rows carry the file's timestamp. The training
file has no times: train and valid rows carry a placeholder, the 0-based position of the target
event among all events of the training file (so 0.000, 1.000, ...): monotone in file order and
far before any real time, never a real time. A pickled test file without timestamps gets the
same kind of placeholder, continuing after the training file's events.

Caching: the stats file records the SHA-256 of the input files, the parameters and the sizes of
the outputs; a later call with the same inputs and parameters, finding the outputs intact,
returns the recorded stats without rewriting anything (``force=True`` rebuilds). The returned
dict adds ``reused`` (and ``elapsed_s`` of this call), like ``convert_events``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from recbole_srgnn.data.benchmark_files import Cases, sessions_to_cases, write_cases
from recbole_srgnn.data.presplit_input import detect_format, read_test, read_train
from recbole_srgnn.errors import InputError
from recbole_srgnn.files import atomic_outputs, check_output_file, sha256_of

FORMAT = "recbole-srgnn/presplit-benchmark-v1"


# ------------------------------------------------------------------------------------- the import

def output_paths(out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    name = out_dir.name
    return {part: out_dir / f"{name}.{part}.{'json' if part == 'stats' else 'inter'}"
            for part in ("train", "valid", "test", "stats")}


def import_presplit(source, out_dir, *, valid_fraction: float = 0.1, max_prefix_length: int = 50,
                    train_sample: float = 1.0, train_sample_seed: int = 0,
                    force: bool = False, progress: bool = True) -> dict:
    """Write ``out_dir/<name>.{train,valid,test}.inter`` + ``.stats.json`` from a pre-split folder.

    See the module doc for formats, split, ids and timestamps. Returns the stats (also written
    to the stats file); reuses the existing files when the stats file records the same input
    checksums and parameters (``reused`` tells), unless ``force``. Bad input raises ``InputError`` and writes
    nothing.
    """
    started = time.monotonic()
    source = Path(source)
    out_dir = Path(out_dir)
    try:
        valid_fraction = float(valid_fraction)
    except (TypeError, ValueError):
        raise InputError(f"valid_fraction must be a number, got {valid_fraction!r}") from None
    if not 0.0 < valid_fraction < 1.0:
        raise InputError(f"valid_fraction must be between 0 and 1 (exclusive), got {valid_fraction}")
    if isinstance(max_prefix_length, bool) or int(max_prefix_length) != max_prefix_length \
            or max_prefix_length < 0:
        raise InputError(f"max_prefix_length must be a non-negative integer (0 = keep all), "
                         f"got {max_prefix_length!r}")
    max_prefix_length = int(max_prefix_length)
    try:
        train_sample = float(train_sample)
    except (TypeError, ValueError):
        raise InputError(f"train_sample must be a number, got {train_sample!r}") from None
    if not 0.0 < train_sample <= 1.0:
        raise InputError(f"train_sample must be in (0, 1] (1 = every session), got {train_sample}")
    if isinstance(train_sample_seed, bool) or not isinstance(train_sample_seed, int):
        raise InputError(f"train_sample_seed must be a whole number, got {train_sample_seed!r}")

    kind, (train_path, test_path) = detect_format(source)
    for path in output_paths(out_dir).values():  # before any work: a bad output path fails at once
        check_output_file(path, "output file")
    say = _reporter(progress)
    inputs = {p.name: sha256_of(p) for p in (train_path, test_path)}
    params = {"valid_fraction": valid_fraction, "max_prefix_length": max_prefix_length}
    if train_sample < 1.0:  # absent when off: imports made before the option stay valid
        params.update(train_sample=train_sample, train_sample_seed=train_sample_seed)
    paths = output_paths(out_dir)
    if not force:
        cached = _cached_stats(paths, inputs, params)
        if cached is not None:
            say(f"reusing the import in {out_dir} (same inputs and parameters)")
            return dict(cached, reused=True, elapsed_s=round(time.monotonic() - started, 3))

    say(f"reading {train_path}")
    sessions = read_train(kind, train_path)
    say(f"reading {test_path}")
    test = read_test(kind, test_path)
    if train_sample < 1.0:
        rng = np.random.default_rng(train_sample_seed)
        keep = np.sort(rng.choice(len(sessions), size=max(2, round(len(sessions) * train_sample)),
                                  replace=False))
        say(f"keeping {len(keep)} of {len(sessions)} training sessions (train_sample "
            f"{train_sample}, seed {train_sample_seed})")
        sessions = [sessions[i] for i in keep]

    n_sessions = len(sessions)
    n_valid = int(round(n_sessions * valid_fraction))
    if n_valid < 1 or n_valid >= n_sessions:
        raise InputError(f"valid_fraction {valid_fraction} of {n_sessions} training sessions "
                         f"leaves an empty training or validation part")
    n_train = n_sessions - n_valid

    lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=n_sessions)
    events = np.fromiter((i for s in sessions for i in s), dtype=np.int64, count=int(lengths.sum()))
    session_index = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
    ordinal_ms = np.arange(len(events), dtype=np.int64) * 1000
    cut = int(lengths[:n_train].sum())
    train_cases = _with_string_ids(sessions_to_cases(session_index[:cut], events[:cut],
                                                     ordinal_ms[:cut]), "t")
    valid_cases = _with_string_ids(sessions_to_cases(session_index[cut:], events[cut:],
                                                     ordinal_ms[cut:]), "v")
    if len(train_cases) == 0 or len(valid_cases) == 0:
        raise InputError(f"the training sessions give {len(train_cases)} training and "
                         f"{len(valid_cases)} validation cases; both must be non-empty")
    test_cases = _test_cases(test, first_placeholder=len(events))
    clash = set(np.unique(test_cases.session_id)) & (
        set(np.unique(train_cases.session_id)) | set(np.unique(valid_cases.session_id)))
    if clash:
        raise InputError(f"test session ids clash with the generated train/valid ids "
                         f"(t<k>/v<k>), e.g. {sorted(clash)[0]!r}")

    train_items = np.unique(events[:cut])
    stats = {
        "format": FORMAT,
        "name": out_dir.name,
        "source": {"path": str(source.resolve()), "format": kind},
        "inputs": inputs,
        "params": params,
        "timestamps": ("test: the file's times; train/valid: placeholder = 0-based position of "
                       "the target event in the training file, in seconds"
                       + ("" if test["timestamp_ms"] is not None else
                          "; test (file has no times): placeholder continuing after train")),
        "splits": {
            "train": _split_stats(train_cases, events[:cut], n_train, max_prefix_length),
            "valid": _split_stats(valid_cases, events[cut:], n_valid, max_prefix_length),
            "test": _split_stats(test_cases, None, None, max_prefix_length),
        },
        "items": int(len(np.unique(np.concatenate([events, test_cases.items, test_cases.target])))),
        "items_train": int(len(train_items)),
        "test_targets_not_in_train": int((~np.isin(test_cases.target, train_items)).sum()),
        "valid_targets_not_in_train": int((~np.isin(valid_cases.target, train_items)).sum()),
        "test_one_item_prefixes": int((test_cases.prefix_lengths() == 1).sum()),
    }

    say(f"writing {paths['train'].parent}")
    with atomic_outputs([paths["train"], paths["valid"], paths["test"], paths["stats"]]) as tmp:
        files = {}
        for split, temp, cases in zip(("train", "valid", "test"), tmp,
                                      (train_cases, valid_cases, test_cases)):
            write_cases(temp, cases, max_prefix_length=max_prefix_length)
            files[split] = {"name": paths[split].name, "bytes": temp.stat().st_size,
                            "rows": len(cases)}
        stats["files"] = files
        stats["elapsed_s"] = round(time.monotonic() - started, 3)
        tmp[3].write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    s = stats["splits"]
    say(f"done: train {s['train']['cases']} / valid {s['valid']['cases']} / test "
        f"{s['test']['cases']} cases, {stats['items']} items")
    return dict(stats, reused=False)


def _reporter(progress: bool):
    def say(message: str) -> None:
        if progress:
            print(f"[presplit] {message}", file=sys.stderr, flush=True)
    return say


def _cached_stats(paths: dict[str, Path], inputs: dict, params: dict) -> dict | None:
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        stats = json.loads(paths["stats"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(stats, dict) and stats.get("format") == FORMAT
            and stats.get("inputs") == inputs and stats.get("params") == params):
        return None
    files = stats.get("files", {})
    for split in ("train", "valid", "test"):
        if not isinstance(files.get(split), dict) or \
                files[split].get("bytes") != paths[split].stat().st_size:
            return None
    return stats


def _with_string_ids(cases: Cases, letter: str) -> Cases:
    """Session ids ``<letter><1-based position in the training file>``."""
    ids = np.char.add(letter, (cases.session_id + 1).astype(str)) if len(cases) else \
        np.zeros(0, dtype="<U1")
    return Cases(cases.items, cases.start, cases.end, cases.target, ids, cases.timestamp_ms)


def _test_cases(test: dict[str, list], *, first_placeholder: int) -> Cases:
    prefixes = test["prefix"]
    n = len(prefixes)
    lengths = np.fromiter((len(p) for p in prefixes), dtype=np.int64, count=n)
    if test["session_id"] is None:
        ids = np.char.add("x", np.arange(1, n + 1).astype(str))
    else:
        ids = np.asarray(test["session_id"], dtype=str)
    if test["timestamp_ms"] is None:
        stamps = (first_placeholder + np.arange(n, dtype=np.int64)) * 1000
    else:
        stamps = np.asarray(test["timestamp_ms"], dtype=np.int64)
    # Rows grouped by session (first appearance order), time order (= prefix length) within.
    _, first_seen, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.lexsort((np.arange(n), lengths, first_seen[inverse]))
    pool = np.fromiter((i for k in order for i in prefixes[k]), dtype=np.int64,
                       count=int(lengths.sum()))
    end = np.cumsum(lengths[order])
    return Cases(items=pool, start=end - lengths[order], end=end,
                 target=np.asarray(test["target"], dtype=np.int64)[order],
                 session_id=ids[order], timestamp_ms=stamps[order])


def _split_stats(cases: Cases, events: np.ndarray | None, n_sessions: int | None,
                 max_prefix_length: int) -> dict:
    lengths = cases.prefix_lengths()
    out = {
        "sessions": int(n_sessions) if n_sessions is not None else int(len(np.unique(cases.session_id))),
        "cases": int(len(cases)),
    }
    if events is None:  # test: items over prefixes and targets
        events = np.concatenate([cases.items, cases.target])
    else:
        out["events"] = int(len(events))
    out.update({
        "items": int(len(np.unique(events))),
        "max_prefix_length_seen": int(lengths.max()) if len(lengths) else 0,
        "prefixes_truncated": int((lengths > max_prefix_length).sum()) if max_prefix_length else 0,
    })
    return out
