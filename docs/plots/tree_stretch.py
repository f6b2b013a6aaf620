#!/usr/bin/env python3
"""How much longer is a path on one shared spanning tree than the shortest
path flooding takes, with messages from random origins? Pure propagation
(link latencies only, no processing), on the graphs of the two
simulators. Standard library only; a few minutes.

    python3 docs/plots/tree_stretch.py

For each graph it prints the median and 99th percentile of the delivery
latency over (origin, receiver) pairs, as a ratio to flooding's, for:

* spt-random: the shortest-path tree of one random node (what PlumTree
  forms from the first message it floods);
* spt-central: the shortest-path tree of the most central of 30 sampled
  nodes (about the best shared tree: a 2-approximation of the minimum
  routing cost tree);
* +10% shortcuts: spt-random plus 0.1 N more eager links, the most an
  RMR below 0.2 allows (each extra link costs one or two redundant copies
  per message), picked at random or shortest first;
* fan-out: spt-random, but the origin also pushes to every neighbour and
  the message enters the tree at all of them;
* fan-out (central): the same on spt-central;
* + hop-1 fastest j: fan-out (central), and each of the origin's
  neighbours also pushes to its j lowest-latency neighbours.

Each row also gives the redundant copies per message it adds (about one
per extra entry point into the tree, counted as the extra pushes), as an
RMR increment: the goal allows 0.2 in all.
"""

import heapq
import math
import random


def graph(n, k, lat, seed):
    r = random.Random(seed)
    adj = [dict() for _ in range(n)]
    for i in range(n):
        for j in r.sample([j for j in range(n) if j != i], k):
            if j not in adj[i]:
                w = lat(r)
                adj[i][j] = w
                adj[j][i] = w
    return adj


def dijkstra(adj, sources):
    """sources: {node: initial distance}."""
    d = [math.inf] * len(adj)
    par = [-1] * len(adj)
    h = []
    for s, d0 in sources.items():
        d[s] = d0
        h.append((d0, s))
    heapq.heapify(h)
    while h:
        du, u = heapq.heappop(h)
        if du > d[u]:
            continue
        for v, w in adj[u].items():
            if du + w < d[v]:
                d[v] = du + w
                par[v] = u
                heapq.heappush(h, (d[v], v))
    return d, par


def tree_of(adj, par):
    t = [dict() for _ in adj]
    for v, p in enumerate(par):
        if p >= 0:
            t[v][p] = adj[v][p]
            t[p][v] = adj[v][p]
    return t


def pct(a, p):
    a = sorted(a)
    return a[min(len(a) - 1, int(len(a) * p))]


def latencies(t, origins, entries=None):
    out = []
    for o in origins:
        src = {o: 0}
        if entries:
            for e, w in entries(o).items():
                src[e] = min(src.get(e, math.inf), w)
        d, _ = dijkstra(t, src)
        out += [x for i, x in enumerate(d) if i != o]
    return out


def study(name, n, k, lat, seed=1):
    adj = graph(n, k, lat, seed)
    r = random.Random(seed + 1)
    origins = r.sample(range(n), 40)
    flood = latencies(adj, origins)
    f50, f99 = pct(flood, 0.5), pct(flood, 0.99)
    rows = []

    def add(label, lats, extra=0.0):
        rows.append((label, pct(lats, 0.5) / f50, pct(lats, 0.99) / f99, extra / n))

    _, par = dijkstra(adj, {origins[-1]: 0})
    spt = tree_of(adj, par)
    add("spt-random", latencies(spt, origins))
    best = min(origins[:30], key=lambda c: sum(dijkstra(adj, {c: 0})[0]))
    central = tree_of(adj, dijkstra(adj, {best: 0})[1])
    add("spt-central", latencies(central, origins))
    others = [(u, v) for u in range(n) for v in adj[u] if u < v and v not in spt[u]]
    m = n // 10
    for how, pick in [
        ("random", r.sample(others, m)),
        ("shortest", sorted(others, key=lambda e: adj[e[0]][e[1]])[:m]),
    ]:
        t = [dict(x) for x in spt]
        for u, v in pick:
            t[u][v] = adj[u][v]
            t[v][u] = adj[u][v]
        add(f"+10% shortcuts ({how})", latencies(t, origins), 2 * m)
    degree = sum(len(a) for a in adj) / n
    add("fan-out", latencies(spt, origins, entries=lambda o: adj[o]), degree)
    add("fan-out (central)", latencies(central, origins, entries=lambda o: adj[o]), degree)
    for j in (1, 2, 3):

        def entries(o, j=j):
            e = dict(adj[o])
            for v, w in adj[o].items():
                for x, w2 in sorted(adj[v].items(), key=lambda t: t[1])[:j]:
                    if x != o:
                        e[x] = min(e.get(x, math.inf), w + w2)
            return e

        add(f"+ hop-1 fastest {j}", latencies(central, origins, entries=entries), degree * (1 + j))
    print(f"{name}: flooding p50 {f50:.0f} ms, p99 {f99:.0f} ms")
    for label, a, b, rmr in rows:
        print(f"  {label:28} p50 x{a:.2f}  p99 x{b:.2f}  RMR +{rmr:.3f}")


def uniform(r):
    return r.uniform(10, 60)


def log_uniform(r):
    return math.exp(r.uniform(math.log(5), math.log(150)))


if __name__ == "__main__":
    study("in-memory sim: 1,000 nodes, 4 links each, 10-60 ms", 1000, 4, uniform)
    study("gladius sim-like: 1,000 nodes, 40 links each, 5-150 ms log-uniform", 1000, 40, log_uniform)
