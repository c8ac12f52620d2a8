"""Which experts of a layer become one: MC-SMoE's dominant-expert groups and Sub-MoE's k-means clusters.

Both partition the E experts of a layer into ``n_groups`` non-empty groups of any size, so any count from
1 to E is valid (8 experts into 3 groups gives groups of uneven size); a count outside that range is the
one that "does not divide" and is rejected by :func:`check_group_count`. Groups are sorted lists of
expert indices: MC-SMoE's in the order of their dominant experts, Sub-MoE's by their first member.
"""

from __future__ import annotations

import numpy as np

from evomerge.errors import ConfigError


def check_group_count(n_groups: object, num_experts: int, method: str) -> int:
    """``n_groups`` when E experts can be split into that many non-empty groups, else a ConfigError."""
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or not 1 <= n_groups <= num_experts:
        raise ConfigError(f"cannot split {num_experts} experts into {n_groups!r} non-empty groups; {method} needs "
                          f"a whole number from 1 to {num_experts}", "parameters.num_experts")
    return n_groups


def _ordered(groups: list[list[int]]) -> list[list[int]]:
    return sorted((sorted(g) for g in groups), key=lambda g: g[0])


def dominant_groups(frequency: np.ndarray, similarity: np.ndarray, n_groups: int) -> tuple[list[list[int]], list[int]]:
    """MC-SMoE grouping: the ``n_groups`` most-routed experts lead a group each (ties: lower index first);
    every other expert joins the leader it is most similar to (ties: the lower-indexed leader).

    Returns the groups and each group's dominant expert, in the same order.
    """
    order = np.argsort(-np.asarray(frequency, dtype=np.float64), kind="stable")
    leaders = sorted(int(e) for e in order[:n_groups])
    members: dict[int, list[int]] = {d: [d] for d in leaders}
    for e in range(len(frequency)):
        if e not in members:
            best = max(leaders, key=lambda d: (float(similarity[e, d]), -d))
            members[best].append(e)
    groups = [sorted(members[d]) for d in leaders]
    return groups, leaders


def kmeans_groups(features: np.ndarray, n_groups: int, rng: np.random.Generator, restarts: int = 10,
                  max_iter: int = 100) -> list[list[int]]:
    """Sub-MoE clustering: k-means++ then Lloyd iterations on the rows of ``features`` (one row per expert),
    best of ``restarts`` by inertia, with no cluster left empty (identical experts would otherwise leave
    some empty: a cluster's farthest point is moved into each empty one)."""
    x = np.asarray(features, dtype=np.float64)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(max(1, restarts)):
        labels = _lloyd(x, _plus_plus(x, n_groups, rng), max_iter)
        centers = np.stack([x[labels == g].mean(axis=0) for g in range(n_groups)])
        inertia = float(((x - centers[labels]) ** 2).sum())
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, labels)
    assert best is not None
    return _ordered([[int(e) for e in np.flatnonzero(best[1] == g)] for g in range(n_groups)])


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [x[int(rng.integers(len(x)))]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.stack(centers)[None]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        pick = int(rng.integers(len(x))) if total <= 0 else int(rng.choice(len(x), p=d2 / total))
        centers.append(x[pick])
    return np.stack(centers)


def _lloyd(x: np.ndarray, centers: np.ndarray, max_iter: int) -> np.ndarray:
    labels = np.full(len(x), -1)
    for _ in range(max_iter):
        dist = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
        new = _fill_empty(np.argmin(dist, axis=1), dist, len(centers))
        if np.array_equal(new, labels):
            break
        labels = new
        centers = np.stack([x[labels == g].mean(axis=0) for g in range(len(centers))])
    return labels


def _fill_empty(labels: np.ndarray, dist: np.ndarray, k: int) -> np.ndarray:
    labels = labels.copy()
    for g in range(k):
        if (labels == g).any():
            continue
        sizes = np.bincount(labels, minlength=k)
        movable = np.flatnonzero(sizes[labels] > 1)
        far = movable[np.argmax(dist[movable, labels[movable]])]
        labels[far] = g
    return labels
