"""A synthetic click log in the raw Retail Rocket schema: the project's embedded default dataset.

``generate_events`` returns a table with the columns of Kaggle's ``events.csv``
(``timestamp,visitorid,event,itemid,transactionid``) and the quirks of the real file:

- rows are not sorted (a seeded random permutation);
- timestamps are milliseconds since the epoch, 2015-05-03 .. 2015-09-18 UTC;
- some events share a timestamp, and about 1 % are logged twice, 0-30 ms apart;
- about 2.5 % ``addtocart`` and 0.8 % ``transaction`` events (the rest ``view``); transaction
  ids are written like ``14418.0`` (a float column, empty for other events), as in the real file;
- item ids are scattered over 0 .. ~470,000 and visitor ids are unrelated to time.

Structure (so that next-item recommendation is learnable):

- items have power-law (Zipf, exponent ``zipf_exponent``) popularity and belong to latent
  clusters of varying size;
- every item has ``n_successors`` favoured successors, popularity-weighted within its cluster,
  with decreasing weights: a session walks this sparse transition graph (70 %), repeats the
  previous item (15 %), revisits an earlier item of the session (5 %) or jumps to a popular item
  of the same cluster or of the whole catalogue (10 %);
- session lengths (in views) are geometric with mean ``mean_session_length``; visitors have a
  geometric number of sessions (mean 1.5) with gaps well over an hour between them, and a home
  cluster where half of their sessions start; gaps within a session are log-normal (median 45 s,
  more than an hour in well under 0.1 % of cases).

Everything is vectorised over sessions (one numpy step per position in a session), seeded with
one ``numpy.random.Generator``: the same arguments give the same rows, and ``write_events_csv``
the same bytes. 2.76M rows (the real file's size) take a few seconds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_srgnn.errors import InputError
from recbole_srgnn.files import atomic_outputs, check_output_file

# Default size of the embedded dataset. Converted with the default protocol (1 h sessions,
# views, support >= 5, length >= 2, 7 + 7 days) it leaves about 2.9k items and 78k training
# cases (measured counts in dataset/README.md).
DEFAULT_N_EVENTS = 120_000

# Real Retail Rocket time span (ms since the epoch, UTC): 2015-05-03 03:00 .. 2015-09-18 03:00.
T_START_MS = 1_430_622_000_000
T_END_MS = 1_442_545_200_000

COLUMNS = ["timestamp", "visitorid", "event", "itemid", "transactionid"]

# Bumped whenever the same arguments would give different rows (caches of generated files key on
# it, together with the arguments).
GENERATOR_VERSION = 1

_HOUR_S = 3600.0
_MAX_ITEM_ID = 470_000  # real item ids go up to ~466,867


def default_n_items(n_events: int) -> int:
    """Catalogue size for ``n_events`` rows: 2.7 % of the rows (~75k items at full size).

    Sessions walk a transition graph whose draws flatten popularity, so most generated items
    pass a support filter of 5; the real file has more, rarer items (~235k in 2.76M rows), and
    its converted splits keep ~40-50k. 2.7 % gives a converted catalogue of a few thousand items
    at the default size and tens of thousands at full size.
    """
    return max(50, int(round(0.027 * n_events)))


def generate_events(
    n_events: int,
    *,
    seed: int = 0,
    n_items: int | None = None,
    n_clusters: int | None = None,
    zipf_exponent: float = 1.2,
    mean_session_length: float = 4.0,
    n_successors: int = 8,
    addtocart_rate: float = 0.026,
    transaction_rate: float = 0.32,
    duplicate_rate: float = 0.01,
) -> pd.DataFrame:
    """Exactly ``n_events`` rows of a synthetic Retail Rocket click log (see the module doc).

    ``n_items`` defaults to ``default_n_items(n_events)``, ``n_clusters`` to one per 60 items.
    ``addtocart_rate`` is per view, ``transaction_rate`` per add-to-cart, ``duplicate_rate`` per
    row. Columns: ``timestamp`` int64 ms, ``visitorid`` int64, ``event`` str, ``itemid`` int64,
    ``transactionid`` float64 (NaN except for transactions).
    """
    n_events = int(n_events)
    if n_events < 1:
        raise InputError(f"n_events must be at least 1, got {n_events}")
    n_items = default_n_items(n_events) if n_items is None else int(n_items)
    if not 2 <= n_items <= _MAX_ITEM_ID:
        raise InputError(f"n_items must be between 2 and {_MAX_ITEM_ID}, got {n_items}")
    n_clusters = max(1, n_items // 60) if n_clusters is None else int(n_clusters)
    if not 1 <= n_clusters <= n_items:
        raise InputError(f"n_clusters must be between 1 and n_items, got {n_clusters}")
    if mean_session_length < 1:
        raise InputError(f"mean_session_length must be at least 1, got {mean_session_length}")
    if n_successors < 1:
        raise InputError(f"n_successors must be at least 1, got {n_successors}")
    for name, rate in (("addtocart_rate", addtocart_rate), ("transaction_rate", transaction_rate),
                       ("duplicate_rate", duplicate_rate)):
        if not 0 <= rate < 1:
            raise InputError(f"{name} must be in [0, 1), got {rate}")

    params = dict(
        n_items=n_items, n_clusters=n_clusters, zipf_exponent=float(zipf_exponent),
        mean_session_length=float(mean_session_length), n_successors=int(n_successors),
        addtocart_rate=float(addtocart_rate), transaction_rate=float(transaction_rate),
        duplicate_rate=float(duplicate_rate),
    )
    expected_per_visitor = (1.5 * mean_session_length * (1 + addtocart_rate * (1 + transaction_rate))
                            * (1 + duplicate_rate))
    n_visitors = int(math.ceil(n_events / expected_per_visitor * 1.08)) + 20
    while True:
        # Each attempt starts from the seed again, so the result depends only on the arguments.
        table = _generate(n_visitors, seed=int(seed), **params)
        if len(table["timestamp"]) >= n_events:
            break
        n_visitors = int(n_visitors * 1.25) + 20

    rng = np.random.default_rng([int(seed), 2])
    # Keep the first n_events rows in visitor/time order (cuts only the last visitors' tails),
    # then shuffle: the real file is not sorted.
    order = rng.permutation(n_events)
    event_names = np.array(["view", "addtocart", "transaction"], dtype=object)
    return pd.DataFrame({
        "timestamp": table["timestamp"][:n_events][order],
        "visitorid": table["visitorid"][:n_events][order],
        "event": event_names[table["event"][:n_events][order]],
        "itemid": table["itemid"][:n_events][order],
        "transactionid": table["transactionid"][:n_events][order],
    }, columns=COLUMNS)


def write_events_csv(path: str | os.PathLike, *, n_events: int = DEFAULT_N_EVENTS, seed: int = 0,
                     n_items: int | None = None) -> Path:
    """Generate ``n_events`` rows and write them as ``events.csv`` at ``path`` (atomically).

    The file has the real file's header and formatting (transaction ids like ``14418.0``, empty
    otherwise). Same arguments, same bytes. Returns the path.
    """
    path = check_output_file(path, "output file")  # before generating
    frame = generate_events(n_events, seed=seed, n_items=n_items)
    with atomic_outputs([path]) as (tmp,):
        frame.to_csv(tmp, index=False, lineterminator="\n", float_format="%.1f")
    return path


# ------------------------------------------------------------------------------------ internals

def _generate(n_visitors: int, *, seed: int, n_items: int, n_clusters: int, zipf_exponent: float,
              mean_session_length: float, n_successors: int, addtocart_rate: float,
              transaction_rate: float, duplicate_rate: float) -> dict[str, np.ndarray]:
    """All events of ``n_visitors`` visitors, sorted by (visitor, time): a dict of columns."""
    rng = np.random.default_rng([seed, 1])

    # ---- catalogue: popularity, clusters, transition graph
    popularity = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** zipf_exponent
    popularity = popularity[rng.permutation(n_items)]
    cluster_weight = 1.0 / np.arange(1, n_clusters + 1, dtype=np.float64) ** 0.7
    cluster = rng.choice(n_clusters, size=n_items, p=cluster_weight / cluster_weight.sum())
    cluster[rng.permutation(n_items)[:n_clusters]] = np.arange(n_clusters)  # none empty
    by_cluster = np.argsort(cluster, kind="stable")
    # Within-cluster draws use a flattened popularity, or every walk collapses onto the head
    # item of its cluster.
    cumulative = np.cumsum(popularity[by_cluster] ** 0.5)
    cluster_end = np.cumsum(np.bincount(cluster, minlength=n_clusters))
    cluster_begin = cluster_end - np.bincount(cluster, minlength=n_clusters)
    cum_lo = np.where(cluster_begin > 0, cumulative[np.maximum(cluster_begin - 1, 0)], 0.0)
    cum_hi = cumulative[cluster_end - 1]
    global_cumulative = np.cumsum(popularity)

    def popular_in(clusters: np.ndarray) -> np.ndarray:
        u = cum_lo[clusters] + rng.random(len(clusters)) * (cum_hi[clusters] - cum_lo[clusters])
        index = np.searchsorted(cumulative, u, side="right")
        index = np.clip(index, cluster_begin[clusters], cluster_end[clusters] - 1)
        return by_cluster[index]

    def popular_anywhere(size: int) -> np.ndarray:
        u = rng.random(size) * global_cumulative[-1]
        return np.minimum(np.searchsorted(global_cumulative, u, side="right"), n_items - 1)

    successors = popular_in(np.repeat(cluster, n_successors)).reshape(n_items, n_successors)
    for _ in range(3):  # an item is not its own favoured successor (repeats are drawn apart)
        own = successors == np.arange(n_items)[:, None]
        if not own.any():
            break
        successors[own] = popular_in(np.broadcast_to(cluster[:, None], own.shape)[own])
    successor_p = 1.0 / np.arange(1, n_successors + 1, dtype=np.float64) ** 1.2
    successor_p /= successor_p.sum()
    item_ids = np.sort(rng.choice(_MAX_ITEM_ID, size=n_items, replace=False))[rng.permutation(n_items)]

    # ---- visitors and sessions
    sessions_per_visitor = np.minimum(rng.geometric(1 / 1.5, size=n_visitors), 10)
    n_sessions = int(sessions_per_visitor.sum())
    session_visitor = np.repeat(np.arange(n_visitors), sessions_per_visitor)
    home = rng.choice(n_clusters, size=n_visitors, p=cluster_weight / cluster_weight.sum())
    length = np.minimum(rng.geometric(1 / mean_session_length, size=n_sessions), 200)

    # ---- walk: views[s, t] for t < length[s], all sessions at once, one step per position
    max_len = int(length.max())
    views = np.full((n_sessions, max_len), -1, dtype=np.int64)
    start_home = rng.random(n_sessions) < 0.5
    first = popular_anywhere(n_sessions)
    first[start_home] = popular_in(home[session_visitor[start_home]])
    views[:, 0] = first
    for t in range(1, max_len):
        active = np.flatnonzero(length > t)
        if len(active) == 0:
            break
        previous = views[active, t - 1]
        nxt = successors[previous, rng.choice(n_successors, size=len(active), p=successor_p)]
        u = rng.random(len(active))
        repeat = u < 0.15
        nxt[repeat] = previous[repeat]
        revisit = (u >= 0.15) & (u < 0.20)
        if revisit.any():
            back = rng.integers(0, t, size=int(revisit.sum()))
            nxt[revisit] = views[active[revisit], back]
        jump = u >= 0.90
        if jump.any():
            m = int(jump.sum())
            local = rng.random(m) < 0.5
            target = popular_anywhere(m)
            target[local] = popular_in(cluster[previous[jump][local]])
            nxt[jump] = target
        views[active, t] = nxt

    # ---- flatten views with times relative to their session's start (seconds)
    n_views = int(length.sum())
    view_session = np.repeat(np.arange(n_sessions), length)
    view_position = np.arange(n_views) - np.repeat(np.cumsum(length) - length, length)
    view_item = views[view_session, view_position]
    gap = np.exp(np.log(45.0) + 1.3 * rng.standard_normal(n_views))
    gap[rng.random(n_views) < 0.005] = 0.0  # same millisecond as the previous view
    gap[view_position == 0] = 0.0
    view_offset = _segment_cumsum(gap, view_session, n_sessions)

    # ---- add-to-cart after some views, transactions after some add-to-carts
    cart = rng.random(n_views) < addtocart_rate
    cart_session = view_session[cart]
    cart_item = view_item[cart]
    cart_offset = view_offset[cart] + np.exp(np.log(20.0) + rng.standard_normal(int(cart.sum())))
    bought = rng.random(len(cart_item)) < transaction_rate
    buy_session = cart_session[bought]
    buy_item = cart_item[bought]
    buy_offset = cart_offset[bought] + np.exp(np.log(300.0) + 0.8 * rng.standard_normal(int(bought.sum())))
    # One transaction id per session that buys (several items may share it).
    buying_sessions = np.unique(buy_session)
    transaction_of_session = np.full(n_sessions, -1, dtype=np.int64)
    transaction_of_session[buying_sessions] = rng.permutation(len(buying_sessions)) + 1

    session_of = np.concatenate([view_session, cart_session, buy_session])
    offset = np.concatenate([view_offset, cart_offset, buy_offset])
    kind = np.concatenate([np.zeros(n_views, np.int8), np.ones(len(cart_item), np.int8),
                           np.full(len(buy_item), 2, np.int8)])
    item = np.concatenate([view_item, cart_item, buy_item])

    # ---- place sessions in time: gaps of more than an hour after the previous session's end
    span = np.zeros(n_sessions)
    np.maximum.at(span, session_of, offset)
    pause = _HOUR_S + 1.0 + rng.exponential(3 * 86400.0, size=n_sessions)
    pause = np.minimum(pause, 20 * 86400.0)
    visitor_first = np.cumsum(sessions_per_visitor) - sessions_per_visitor
    step = span + pause  # from this session's start to the next one's
    before = np.cumsum(step) - step
    session_start = before - before[visitor_first][session_visitor]
    last = visitor_first + sessions_per_visitor - 1
    visitor_span = session_start[last] + span[last]
    period = (T_END_MS - T_START_MS) / 1000.0
    scale = np.minimum(1.0, 0.95 * period / np.maximum(visitor_span, 1.0))
    visitor_start = rng.random(n_visitors) * np.maximum(period - visitor_span * scale, 0.0)
    session_time = visitor_start[session_visitor] + session_start * scale[session_visitor]
    # Within sessions times are not scaled: gaps stay as drawn.
    timestamp = T_START_MS + np.round((session_time[session_of] + offset) * 1000.0).astype(np.int64)
    visitor_of = session_visitor[session_of]

    # ---- double logging: copies 0-30 ms later
    n_rows = len(item)
    dup = np.flatnonzero(rng.random(n_rows) < duplicate_rate)
    delay = rng.integers(0, 31, size=len(dup))
    timestamp = np.concatenate([timestamp, timestamp[dup] + delay])
    visitor_of = np.concatenate([visitor_of, visitor_of[dup]])
    session_of = np.concatenate([session_of, session_of[dup]])
    kind = np.concatenate([kind, kind[dup]])
    item = np.concatenate([item, item[dup]])

    order = np.lexsort((kind, timestamp, visitor_of))
    visitor_of, session_of, kind, item, timestamp = (
        visitor_of[order], session_of[order], kind[order], item[order], timestamp[order])
    transaction = np.where(kind == 2, transaction_of_session[session_of], -1).astype(np.float64)
    transaction[kind != 2] = np.nan
    visitor_ids = rng.permutation(n_visitors)
    return {
        "timestamp": timestamp,
        "visitorid": visitor_ids[visitor_of].astype(np.int64),
        "event": kind,
        "itemid": item_ids[item].astype(np.int64),
        "transactionid": transaction,
    }


def _segment_cumsum(values: np.ndarray, segment: np.ndarray, n_segments: int) -> np.ndarray:
    """Cumulative sum restarting at every segment (``segment`` sorted, contiguous runs)."""
    total = np.cumsum(values)
    counts = np.bincount(segment, minlength=n_segments)
    first = np.cumsum(counts) - counts
    base = np.where(first > 0, total[np.maximum(first - 1, 0)], 0.0)
    return total - base[segment]
