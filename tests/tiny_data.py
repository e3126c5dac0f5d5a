"""A tiny, learnable dataset in our pre-augmented benchmark-file format (tests only)."""

from __future__ import annotations

import random
from pathlib import Path

HEADER = "session_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float"


def write_tiny_benchmark(
    root: Path,
    name: str = "tiny",
    *,
    n_items: int = 30,
    seed: int = 0,
    sessions: tuple[int, int, int] = (60, 12, 12),
    length: tuple[int, int] = (3, 6),
) -> Path:
    """Write ``root/name/name.{train,valid,test}.inter`` and return that folder.

    Each session walks ``start -> start+1 -> ...`` (modulo ``n_items``, ids from 1), so the next
    item is a function of the last one and any model can learn it; ``sessions`` gives the number
    of sessions per split and ``length`` the range of session lengths.
    """
    rng = random.Random(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    sid = 0
    for split, n_sessions in zip(("train", "valid", "test"), sessions):
        rows = [HEADER]
        for _ in range(n_sessions):
            sid += 1
            start = rng.randrange(n_items)
            items = [(start + k) % n_items + 1 for k in range(rng.randint(*length))]
            for j in range(1, len(items)):
                prefix = " ".join(map(str, items[:j]))
                rows.append(f"s{sid}\t{prefix}\t{items[j]}\t{sid * 100 + j}.0")
        (folder / f"{name}.{split}.inter").write_text("\n".join(rows) + "\n")
    return folder
