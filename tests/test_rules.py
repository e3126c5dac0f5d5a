"""SequenceRules baseline: rule table vs a naive per-session count, scores vs the formula, end to end."""

from __future__ import annotations

import collections
import random

import pytest
import torch
from tiny_data import write_tiny_benchmark

from recbole_srgnn.training import runs
from recbole_srgnn.training.datasets import ready_config
from recbole_srgnn.model import MODELS
from recbole_srgnn.model.rules import POPULARITY_WEIGHT, SequenceRules, rule_table


def naive_rules(sessions, steps):
    """R[a][b] = sum of 1/g over pairs (a at t, b at t+g), 1 <= g <= steps; rows scaled to max 1."""
    table = collections.defaultdict(lambda: collections.defaultdict(float))
    for items in sessions:
        for j in range(1, len(items)):
            for g in range(1, min(steps, j) + 1):
                table[items[j - g]][items[j]] += 1.0 / g
    return {a: {b: w / max(row.values()) for b, w in row.items()} for a, row in table.items()}


def cases(sessions, max_len):
    """Pre-augmented cases, as the benchmark files hold them: most recent max_len items -> next."""
    seqs, lens, targets = [], [], []
    for items in sessions:
        for j in range(1, len(items)):
            prefix = items[max(0, j - max_len):j]
            seqs.append(prefix + [0] * (max_len - len(prefix)))
            lens.append(len(prefix))
            targets.append(items[j])
    return (torch.tensor(seqs, dtype=torch.long).reshape(-1, max_len),
            torch.tensor(lens, dtype=torch.long), torch.tensor(targets, dtype=torch.long))


# Fixed seeds (in the test ids) plus one drawn afresh per run (``None``), printed and named in
# the assertion message: a failure on it is reproduced by adding that seed to this list.
RULE_TABLE_SEEDS = [1000, 1001, 1002, 1003, None]


@pytest.mark.parametrize("seed", RULE_TABLE_SEEDS,
                         ids=lambda seed: "fresh-seed" if seed is None else f"seed{seed}")
def test_rule_table_matches_naive_reference(seed):
    if seed is None:
        seed = random.SystemRandom().randrange(10**6)
    print(f"test_rule_table_matches_naive_reference: seed {seed}")
    rng = random.Random(seed)
    n_items = rng.randint(3, 25)
    steps = rng.randint(1, 6)
    max_len = rng.randint(steps, 8)  # prefixes are truncated to the most recent max_len items
    sessions = [[rng.randint(1, n_items - 1) for _ in range(rng.randint(1, 14))]
                for _ in range(rng.randint(1, 40))]
    crow, col, val = rule_table(*cases(sessions, max_len), n_items, steps)
    dense = torch.zeros(n_items, n_items)
    dense[torch.repeat_interleave(torch.arange(n_items), crow.diff()), col] = val
    expected = torch.zeros(n_items, n_items)
    for a, row in naive_rules(sessions, steps).items():
        for b, w in row.items():
            expected[a, b] = w
    assert torch.allclose(dense, expected, atol=1e-6), (
        f"seed {seed} (n_items={n_items}, steps={steps}, max_len={max_len}): "
        f"max difference {(dense - expected).abs().max().item()}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("rules")
    write_tiny_benchmark(root / "data", "tiny", seed=3, sessions=(60, 12, 12), length=(2, 7))
    return root


def build(tiny, **extra):
    from recbole.data import create_dataset, data_preparation

    config = ready_config("SequenceRules", "tiny", None, {
        "data_path": str(tiny / "data"), "checkpoint_dir": str(tiny / "saved"),
        "show_progress": False, **extra})
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    return dataset, SequenceRules(config, train._dataset), test


def test_scores_follow_the_formula(tiny):
    assert MODELS["SequenceRules"] is SequenceRules
    dataset, model, test = build(tiny, repeat_boost=0.7, rule_steps=3)
    train_rows = [line.rstrip("\n").split("\t")
                  for line in open(tiny / "data" / "tiny" / "tiny.train.inter")][1:]
    ids = lambda tokens: [dataset.token2id("item_id", t) for t in tokens]  # noqa: E731
    sessions = collections.defaultdict(list)
    for sid, prefix, target, _ in train_rows:  # rebuild each training session from its cases
        sessions[sid] = ids(prefix.split()) + ids([target])
    rules = naive_rules(sessions.values(), 3)
    pop = collections.Counter(ids(row[2] for row in train_rows))

    batch = next(iter(test))[0]
    scores = model.full_sort_predict(batch)
    assert scores.shape == (len(batch), dataset.item_num)
    for b in range(len(batch)):
        n = int(batch["item_length"][b])
        prefix = batch["item_id_list"][b, :n].tolist()
        expected = torch.tensor([POPULARITY_WEIGHT * pop[i] / max(pop.values())
                                 for i in range(dataset.item_num)])
        for item, w in rules.get(prefix[-1], {}).items():
            expected[item] += w
        for item in set(prefix):
            last_seen = max(t for t, x in enumerate(prefix) if x == item)
            expected[item] += 0.7 / (1 + n - 1 - last_seen)
        assert torch.allclose(scores[b], expected, atol=1e-5), b
    assert torch.allclose(model.predict(batch), scores.gather(
        1, batch["item_id"].unsqueeze(1)).squeeze(1))
    # a session's scores do not depend on the rest of its batch
    perm_seed = 7
    perm = torch.randperm(len(batch), generator=torch.Generator().manual_seed(perm_seed))
    assert not torch.equal(perm, torch.arange(len(batch)))  # a real shuffle
    shuffled = model.forward(batch["item_id_list"][perm], batch["item_length"][perm])
    assert torch.equal(shuffled, scores[perm]), f"permutation seed {perm_seed}"
    loss = model.calculate_loss(batch)
    assert loss.requires_grad and loss.item() == 0.0


def test_bad_options_are_refused(tiny):
    with pytest.raises(ValueError, match="rule_steps"):
        build(tiny, rule_steps=0)


def test_end_to_end_learns_the_deterministic_walk(tiny, monkeypatch):
    # Every tiny session walks item k -> k+1, so plain rules (no repeat boost) rank the true next
    # item first whenever the last item was seen as a source in training.
    monkeypatch.chdir(tiny)
    results = runs.run("SequenceRules", "tiny", config_dict={
        "data_path": str(tiny / "data"), "checkpoint_dir": str(tiny / "saved"),
        "show_progress": False, "repeat_boost": 0.0}, quiet=True)
    assert results["epochs_trained"] == 1
    assert results["test_result"]["hit@1"] >= 0.9
    assert results["best_valid_result"]["hit@1"] >= 0.9
