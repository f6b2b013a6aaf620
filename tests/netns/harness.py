#!/usr/bin/env python3
"""Multi-host reliability harness for `gladius node` (issue 7), and NAT
routers (scenario 6, issue 13: see `NatNet` and docs/nat.md).

Each host is a network namespace joined to one bridge (itself in its own
namespace, so the host's interfaces are never touched), with an address in
10.77.0.0/24 and one `gladius node` process. Faults are nftables rules on
each namespace's `input` hook (random drop, partitions). Every scenario
asserts properties and prints its figures; the last stdout line of a run is
one JSON object with all of them.

Run through tests/netns/run.sh (root checks, binary). Stdlib only.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

PREFIX = f"gnt-{os.getpid()}"
SUBNET = "10.77.0"
PORT = 7000
BIN = os.environ.get("GLADIUS_BIN", "gladius")
T0 = time.monotonic()


def log(*a):
    print(f"[{time.monotonic() - T0:7.1f}s]", *a, file=sys.stderr, flush=True)


def sh(*args, check=True, input=None):
    r = subprocess.run(list(args), capture_output=True, text=True, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Failed(Exception):
    pass


class Checks:
    """Collects failed assertions so one scenario reports all of them."""

    def __init__(self, name):
        self.name = name
        self.failures = []

    def check(self, cond, msg):
        if not cond:
            self.failures.append(msg)
            log(f"FAIL [{self.name}] {msg}")
        return cond


# --------------------------------------------------------------------------
# Namespaces, bridge, nftables


class Net:
    """K namespaces on one bridge; everything is removed by `destroy`."""

    def __init__(self, k, tag):
        self.k = k
        self.br = f"{PREFIX}-{tag}-br"
        self.ns = [f"{PREFIX}-{tag}-h{i}" for i in range(1, k + 1)]
        self.created = []

    def ip(self, i):
        return f"{SUBNET}.{i + 1}"

    def addr(self, i):
        return f"{self.ip(i)}:{PORT}"

    def create(self):
        sh("ip", "netns", "add", self.br)
        self.created.append(self.br)
        sh("ip", "-n", self.br, "link", "set", "lo", "up")
        sh("ip", "-n", self.br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.br, "link", "set", "br0", "up")
        for i, ns in enumerate(self.ns):
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            sh("ip", "-n", self.br, "link", "add", f"p{i}", "type", "veth",
               "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.br, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            # Larger socket buffers, as .ci/run does for the host.
            for key in ("net.core.rmem_max", "net.core.wmem_max"):
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}=8388608", check=False)
            sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=(
                "table inet gnt {\n"
                "  chain input { type filter hook input priority 0; policy accept; }\n"
                "}\n"))
        log(f"net {self.br}: {self.k} hosts {self.ip(0)}..{self.ip(self.k - 1)}")

    def rules(self, i, rules):
        """Replace host i's input rules (nft rule bodies, each counted)."""
        ns = self.ns[i]
        sh("ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "gnt", "input")
        for r in rules:
            sh("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "gnt", "input",
               *r.split(), "counter", "drop")

    def loss(self, i, p, src=None):
        """Rule body: drop p % of UDP to the node port (from src if given)."""
        s = f"ip saddr {src} " if src else ""
        return f"{s}udp dport {PORT} numgen random mod 100 < {p}"

    def dropped(self, i):
        out = sh("ip", "netns", "exec", self.ns[i], "nft", "list", "chain", "inet", "gnt",
                 "input", check=False)
        n = 0
        for line in out.splitlines():
            if "packets" in line:
                w = line.split()
                n += int(w[w.index("packets") + 1])
        return n

    def heal(self):
        for i in range(self.k):
            self.rules(i, [])

    def destroy(self):
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)
        self.created = []


# --------------------------------------------------------------------------
# gladius node processes


class Node:
    def __init__(self, net, i, peers, workdir, name=None):
        self.net = net
        self.i = i
        self.name = name or f"h{i + 1}"
        self.addr = net.addr(i)
        self.peers = list(peers)
        self.datadir = os.path.join(workdir, self.name)
        self.logpath = os.path.join(workdir, f"{self.name}.log")
        self.proc = None
        self.incarnation = 0
        self.extra = []  # more `gladius node` arguments

    def start(self):
        self.incarnation += 1
        self.started_at = time.monotonic()
        args = ["ip", "netns", "exec", self.net.ns[self.i], BIN, "node",
                "--listen", self.addr, "--data-dir", self.datadir]
        for p in self.peers:
            args += ["--peer", p]
        args += self.extra
        self.lock = threading.Lock()
        self.cv = threading.Condition()
        self.answers = {}
        self.msgs = []  # (t, from, type, body)
        self.events = []  # (t, event dict) other than messages and answers
        self.next_id = 0
        self.listening = None
        self.stderr = open(self.logpath, "a")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, env=env)
        self.pid = self.proc.pid  # `ip netns exec` execs the binary: same pid
        self.reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 15
        with self.cv:
            while self.listening is None:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise Failed(f"{self.name}: no `listening` event (see {self.logpath})")
                self.cv.wait(left)
        return self

    def _read(self, proc):
        for raw in proc.stdout:
            t = time.monotonic()
            try:
                ev = json.loads(raw)
            except ValueError:
                log(f"{self.name}: non-JSON stdout line {raw[:200]!r}")
                continue
            kind = ev.get("event")
            with self.cv:
                if kind == "message":
                    self.msgs.append((t, ev.get("from"), ev.get("type"), ev.get("body")))
                elif "id" in ev:
                    self.answers[ev["id"]] = ev
                    self.cv.notify_all()
                else:
                    if kind == "listening":
                        self.listening = ev
                        self.cv.notify_all()
                    self.events.append((t, ev))

    def send(self, obj):
        """Write a command with a fresh id; return the id."""
        with self.lock:
            self.next_id += 1
            cid = self.next_id
            obj = dict(obj, id=cid)
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        return cid

    def wait_answer(self, cid, timeout=15):
        deadline = time.monotonic() + timeout
        with self.cv:
            while cid not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failed(f"{self.name}: no answer to command {cid} in {timeout}s")
                self.cv.wait(left)
            return self.answers.pop(cid)

    def cmd(self, obj, timeout=15):
        return self.wait_answer(self.send(obj), timeout)

    def state(self):
        return self.cmd({"cmd": "state"})

    def connected_writable(self):
        """Addresses of peers that are connected (and writable)."""
        st = self.state()["network"]["peers"]
        conn = {p["addr"] for p in st if p["connection"] == "connected"}
        wr = {p["addr"] for p in st if p["connection"] == "connected" and p["writable"]}
        return conn, wr

    def listed(self):
        return {p["addr"] for p in self.state()["network"]["peers"]}

    def signed(self):
        ents = self.cmd({"cmd": "signed_state"})["entries"]
        return {(e["signer"], e["field"]): (e.get("value"), e["timestamp"]) for e in ents}

    def rss(self):
        return rss_kib(self.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()
            self.stderr.close()

    def stop(self):
        if not self.alive():
            return
        try:
            self.send({"cmd": "close"})
            self.proc.wait(timeout=5)
        except Exception:
            pass
        self.kill9()


class Cluster:
    def __init__(self, k, tag, workdir, topology="mesh", run=None, extra=None):
        self.net = Net(k, tag)
        self.workdir = os.path.join(workdir, tag)
        os.makedirs(self.workdir, exist_ok=True)
        self.k = k
        self.topology = topology
        self.nodes = []
        self.run = list(range(k)) if run is None else run
        self.extra = extra or {}  # host index -> more `gladius node` arguments

    def __enter__(self):
        CLEANUP.append(self)
        self.net.create()
        addrs = [self.net.addr(i) for i in self.run]
        for i in self.run:
            if self.topology == "mesh":
                peers = [a for a in addrs if a != self.net.addr(i)]
            else:  # "seed": everyone knows host 1 only; discovery does the rest
                peers = [] if i == self.run[0] else [addrs[0]]
            self.nodes.append(Node(self.net, i, peers, self.workdir))
            self.nodes[-1].extra = list(self.extra.get(i, []))
        for n in self.nodes:
            n.start()
        return self

    def close(self):
        for n in self.nodes:
            try:
                n.stop()
            except Exception:
                pass
        self.net.destroy()

    def __exit__(self, *exc):
        self.close()
        if self in CLEANUP:
            CLEANUP.remove(self)
        return False

    def wait_mesh(self, nodes=None, timeout=60, writable=True):
        """Until every node in `nodes` has every other one connected (and
        writable); returns seconds taken."""
        nodes = nodes or self.nodes
        t0 = time.monotonic()
        while True:
            missing = {}
            for n in nodes:
                conn, wr = n.connected_writable()
                have = wr if writable else conn
                want = {m.addr for m in nodes if m is not n}
                if not want <= have:
                    missing[n.name] = sorted(want - have)
            if not missing:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise Failed(f"mesh not formed in {timeout}s: missing {missing}")
            time.sleep(0.3)


CLEANUP = []


# --------------------------------------------------------------------------
# Traffic: numbered broadcasts and their accounting


class Traffic:
    """Each sender broadcasts `rel` messages with body `sender:seq:t_sent`;
    the `queued` list of each answer says who must get it."""

    def __init__(self, nodes, mtype="rel"):
        self.nodes = nodes
        self.mtype = mtype
        self.sent = {}  # (sender name, seq) -> (t, set of queued addrs)
        self.seq = {n.name: 0 for n in nodes}
        self.failed_sends = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def send_one(self, n):
        seq = self.seq[n.name]
        # Taken before the command: a node killed while answering may have
        # sent the message already, and reusing its number after the
        # restart would look like a duplicate at the receivers.
        self.seq[n.name] = seq + 1
        t = time.monotonic()
        a = n.cmd({"cmd": "broadcast", "type": self.mtype,
                   "body": f"{n.name}:{seq}:{t:.6f}"})
        if not a.get("ok"):
            self.failed_sends.append((n.name, seq, a.get("error")))
            return a
        with self.lock:
            self.sent[(n.name, seq)] = (t, set(a.get("queued", [])), n.addr)
        if a.get("failed"):
            self.failed_sends.append((n.name, seq, a["failed"]))
        return a

    def run(self, count=None, rate=10.0, duration=None, senders=None):
        """Send from every sender in parallel threads at `rate` msg/s each."""
        senders = senders or self.nodes
        self.stop_flag.clear()
        t_end = time.monotonic() + duration if duration else None

        def loop(n):
            k = 0
            nxt = time.monotonic()
            while not self.stop_flag.is_set():
                if count is not None and k >= count:
                    break
                if t_end is not None and time.monotonic() >= t_end:
                    break
                if n.alive():
                    try:
                        self.send_one(n)
                    except Exception as e:  # a killed node mid-command
                        if n.alive():
                            log(f"send on {n.name}: {e}")
                    k += 1
                nxt += 1.0 / rate
                time.sleep(max(0.0, nxt - time.monotonic()))

        threads = [threading.Thread(target=loop, args=(n,), daemon=True) for n in senders]
        for t in threads:
            t.start()
        return threads

    @staticmethod
    def received(node, mtype):
        """[(t_recv, sender, seq, t_sent, from)] of one node's incarnation."""
        out = []
        with node.cv:
            msgs = list(node.msgs)
        for t, frm, typ, body in msgs:
            if typ != mtype or body is None:
                continue
            s, q, ts = body.split(":")
            out.append((t, s, int(q), float(ts), frm))
        return out

    def expected(self, receiver_addr, since=0.0):
        with self.lock:
            return {k for k, (t, q, _) in self.sent.items() if receiver_addr in q and t >= since}

    def account(self, receivers, strict_order=True):
        """Per receiver: delivered, missing, duplicated, reordered, latencies."""
        res = {"expected": 0, "delivered": 0, "missing": 0, "duplicates": 0,
               "reordered": 0, "unexpected": 0, "lat": []}
        for r in receivers:
            got = self.received(r, self.mtype)
            exp = self.expected(r.addr, since=r.started_at)
            seen = {}
            last = {}
            for t, s, q, ts, frm in got:
                key = (s, q)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > 1:
                    res["duplicates"] += 1
                if q <= last.get(s, -1):
                    res["reordered"] += 1
                last[s] = max(q, last.get(s, -1))
                if key not in exp:
                    res["unexpected"] += 1
                else:
                    res["lat"].append((t - ts) * 1000)
            res["expected"] += len(exp)
            res["delivered"] += len(exp & set(seen))
            res["missing"] += len(exp - set(seen))
        return res

    def wait_complete(self, receivers, timeout):
        t0 = time.monotonic()
        while True:
            a = self.account(receivers)
            if a["missing"] == 0 or time.monotonic() - t0 > timeout:
                return a, time.monotonic() - t0
            time.sleep(0.5)


def lat_summary(lat):
    return {"p50_ms": round(pct(lat, 50), 1) if lat else None,
            "p99_ms": round(pct(lat, 99), 1) if lat else None,
            "max_ms": round(max(lat), 1) if lat else None}


def rss_range(nodes):
    """[min, max] VmRSS (KiB) over the running nodes, now."""
    xs = [n.rss() for n in nodes if n.alive()]
    xs = [x for x in xs if x]
    return [min(xs), max(xs)] if xs else None


def counters(nodes):
    tot = {}
    for n in nodes:
        if not n.alive():
            continue
        try:
            c = n.state()["network"]["counters"]
        except Failed:
            continue
        for k, v in c.items():
            tot[k] = tot.get(k, 0) + v
    return {k: v for k, v in tot.items() if v}


# --------------------------------------------------------------------------
# Scenarios


def scenario_loss_mesh(workdir, hosts=8, loss=10, count=100, rate=10.0):
    """1. K hosts, P % loss on every host's input: every broadcast reaches
    every writable peer exactly once, in per-sender order."""
    c = Checks("1-loss-mesh")
    fig = {"hosts": hosts, "loss_pct": loss, "messages_per_sender": count, "rate_per_sender": rate}
    with Cluster(hosts, "s1", workdir) as cl:
        fig["mesh_s"] = round(cl.wait_mesh(), 1)
        fig["rss_kib_start"] = rss_range(cl.nodes)
        for i in range(hosts):
            cl.net.rules(i, [cl.net.loss(i, loss)])
        tr = Traffic(cl.nodes)
        for t in tr.run(count=count, rate=rate):
            t.join()
        acc, waited = tr.wait_complete(cl.nodes, timeout=60)
        fig["completion_wait_s"] = round(waited, 1)
        fig["dropped_by_nft"] = sum(cl.net.dropped(i) for i in range(hosts))
        want = {(n.name, q) for n in cl.nodes for q in range(count)}
        c.check(set(tr.sent) == want, f"{len(want - set(tr.sent))} broadcasts not accepted")
        for (s, q), (t, queued, saddr) in tr.sent.items():
            others = {m.addr for m in cl.nodes if m.addr != saddr}
            if not c.check(queued == others,
                           f"{s}#{q} queued to {len(queued)} peers, not all {len(others)}"):
                break
        c.check(not tr.failed_sends, f"send failures: {tr.failed_sends[:5]}")
        for k in ("missing", "duplicates", "reordered", "unexpected"):
            c.check(acc[k] == 0, f"{k}: {acc[k]}")
        fig.update({k: acc[k] for k in ("expected", "delivered", "missing", "duplicates",
                                        "reordered")})
        fig.update(lat_summary(acc["lat"]))
        fig["counters"] = counters(cl.nodes)
        fig["rss_kib_end"] = rss_range(cl.nodes)
    return c, fig


def scenario_lossy_host(workdir, hosts=5, loss=30, duration=30, rate=10.0):
    """2. One host with P % loss both ways (its input, and every other host's
    input from it): it stays connected, its messages arrive, no duplicates."""
    c = Checks("2-lossy-host")
    fig = {"hosts": hosts, "loss_pct": loss, "duration_s": duration}
    with Cluster(hosts, "s2", workdir) as cl:
        cl.wait_mesh()
        fig["rss_kib_start"] = rss_range(cl.nodes)
        bad = cl.nodes[0]
        cl.net.rules(0, [cl.net.loss(0, loss)])
        for i in range(1, hosts):
            cl.net.rules(i, [cl.net.loss(i, loss, src=cl.net.ip(0))])
        t_fault = time.monotonic()
        tr = Traffic(cl.nodes)
        for t in tr.run(duration=duration, rate=rate):
            t.join()
        acc, waited = tr.wait_complete(cl.nodes, timeout=60)
        fig["dropped_by_nft"] = sum(cl.net.dropped(i) for i in range(hosts))
        # Disconnections involving the lossy host after the fault began.
        disc = []
        for n in cl.nodes:
            for t, ev in n.events:
                if t >= t_fault and ev.get("event") in ("peer_disconnected", "node_deleted") \
                        and (n is bad or ev.get("addr") == bad.addr):
                    disc.append((n.name, ev["event"], ev.get("addr")))
        c.check(not disc, f"lossy host lost sessions: {disc[:5]}")
        conn, wr = bad.connected_writable()
        c.check(wr >= {m.addr for m in cl.nodes[1:]}, f"lossy host's writable peers now {wr}")
        from_bad = Traffic(cl.nodes)
        from_bad.sent = {k: v for k, v in tr.sent.items() if k[0] == bad.name}
        acc_bad = from_bad.account(cl.nodes[1:])
        to_bad = tr.account([bad])
        for k in ("missing", "duplicates", "reordered", "unexpected"):
            c.check(acc[k] == 0, f"all traffic {k}: {acc[k]}")
        c.check(acc_bad["expected"] >= (hosts - 1) * duration * rate * 0.9,
                f"lossy host sent too little: {acc_bad['expected']} deliveries expected")
        fig["from_lossy"] = {k: acc_bad[k] for k in ("expected", "delivered", "duplicates",
                                                    "reordered")}
        fig["from_lossy"].update(lat_summary(acc_bad["lat"]))
        fig["to_lossy"] = {k: to_bad[k] for k in ("expected", "delivered", "duplicates",
                                                 "reordered")}
        fig["to_lossy"].update(lat_summary(to_bad["lat"]))
        fig["all"] = {k: acc[k] for k in ("expected", "delivered", "missing", "duplicates")}
        fig["completion_wait_s"] = round(waited, 1)
        fig["disconnections"] = len(disc)
        fig["lossy_host_rtt_ms"] = {
            p["addr"]: p["rtt_ms"] for p in bad.state()["network"]["peers"]}
        fig["counters"] = counters(cl.nodes)
        fig["rss_kib_end"] = rss_range(cl.nodes)
    return c, fig


def signed_views(nodes):
    return {n.name: n.signed() for n in nodes if n.alive()}


def converged(views):
    vals = list(views.values())
    return all(v == vals[0] for v in vals)


def scenario_partition(workdir, hosts=8, seconds=20, bound=60, one_way=False):
    """3. Partition half the hosts from the other half for `seconds`, then
    heal: each side works during it; afterwards discovery and signed state
    converge to identical state everywhere within `bound` seconds, by the
    library alone (dead peers are retried, a peer that reconnects proving its
    key is taken back). The heal is only tested if the latency audit really
    removed the other side during the partition, so that is checked too.
    fig["time_to_heal_s"] is the later of the two convergence times."""
    c = Checks("3-partition")
    fig = {"hosts": hosts, "partition_s": seconds, "bound_s": bound}
    with Cluster(hosts, "s3", workdir, topology="seed") as cl:
        fig["discovery_initial_s"] = round(cl.wait_mesh(timeout=60), 1)
        fig["rss_kib_start"] = rss_range(cl.nodes)
        for n in cl.nodes:
            n.cmd({"cmd": "set", "field": "name", "value": f"{n.name}-v1"})
        t0 = time.monotonic()
        while not converged(signed_views(cl.nodes)):
            if time.monotonic() - t0 > 30:
                break
            time.sleep(0.3)
        c.check(converged(signed_views(cl.nodes)), "signed state did not converge before partition")
        fig["signed_initial_s"] = round(time.monotonic() - t0, 1)

        half = hosts // 2
        A, B = cl.nodes[:half], cl.nodes[half:]
        a_ips = "{ " + ", ".join(cl.net.ip(n.i) for n in A) + " }"
        b_ips = "{ " + ", ".join(cl.net.ip(n.i) for n in B) + " }"
        for n in A:
            cl.net.rules(n.i, [f"ip saddr {b_ips}"])
        if not one_way:
            for n in B:
                cl.net.rules(n.i, [f"ip saddr {a_ips}"])
        t_part = time.monotonic()
        log(f"partition {'B->A' if one_way else 'A|B'} for {seconds}s")
        # During the partition: each side sets state and broadcasts.
        for n in cl.nodes:
            n.cmd({"cmd": "set", "field": "name", "value": f"{n.name}-v2"})
        tr = Traffic(cl.nodes, mtype="part")
        for t in tr.run(count=int(seconds * 2) - 4, rate=2.0):
            t.join()
        side_ok = True
        for side in (A, B):
            names = {m.name for m in side}
            for r in side:
                got = {(s, q) for _, s, q, _, _ in Traffic.received(r, "part") if s in names}
                want = {(s, q) for (s, q) in tr.sent if s in names and s != r.name}
                side_ok &= c.check(want <= got, f"during partition {r.name} missed "
                                   f"{len(want - got)} of {len(want)} same-side messages")
            views = signed_views(side)
            side_ok &= c.check(
                all(v[(n.listening["eth_address"], "name")][0] == f"{n.name}-v2"
                    for v in views.values() for n in side),
                "signed state did not converge within a side during the partition")
        fig["sides_worked"] = side_ok
        # The other side must be gone: no session to it left. (Its addresses
        # may still be listed: discovery retries dead peers, and a retry in
        # flight is in the route table, connecting.)
        views_part = [n.connected_writable()[0] for n in cl.nodes]
        fig["peers_connected_at_heal"] = [len(v) for v in views_part]
        c.check(all(len(v) == len(A if n in A else B) - 1 for n, v in zip(cl.nodes, views_part)),
                f"the other side was not disconnected during the partition (connected peers "
                f"per node: {fig['peers_connected_at_heal']}), so healing is not tested")
        time.sleep(max(0.0, seconds - (time.monotonic() - t_part)))
        cl.net.heal()
        t_heal = time.monotonic()
        log("healed")
        mesh_s = sig_s = None
        while time.monotonic() - t_heal < bound:
            el = time.monotonic() - t_heal
            if mesh_s is None:
                try:
                    cl.wait_mesh(timeout=0)
                    mesh_s = el
                except Failed:
                    pass
            if sig_s is None:
                views = signed_views(cl.nodes)
                if converged(views) and len(next(iter(views.values()))) == hosts:
                    sig_s = el
            if mesh_s is not None and sig_s is not None:
                break
            time.sleep(0.5)
        fig["discovery_converged_after_heal_s"] = round(mesh_s, 1) if mesh_s is not None else None
        fig["signed_converged_after_heal_s"] = round(sig_s, 1) if sig_s is not None else None
        fig["time_to_heal_s"] = (round(max(mesh_s, sig_s), 1)
                                 if mesh_s is not None and sig_s is not None else None)
        log(f"time to heal (library alone): {fig['time_to_heal_s']} s "
            f"(mesh {fig['discovery_converged_after_heal_s']} s, "
            f"signed state {fig['signed_converged_after_heal_s']} s)")
        if mesh_s is None:
            fig["mesh_at_bound"] = {n.name: len(n.connected_writable()[1]) for n in cl.nodes}
        if sig_s is None:
            fig["signed_entries_at_bound"] = {k: len(v) for k, v in signed_views(cl.nodes).items()}
        if mesh_s is None or sig_s is None:
            # Already a failure (checked below; the workaround cannot turn
            # it into a pass): for the report only, how long the operator's
            # workaround takes (every node `add`s every other one again).
            t_re = time.monotonic()
            for n in cl.nodes:
                for m in cl.nodes:
                    if m is not n:
                        n.cmd({"cmd": "add", "addr": m.addr})
            re_mesh = re_sig = None
            while time.monotonic() - t_re < bound:
                el = time.monotonic() - t_re
                if re_mesh is None:
                    try:
                        cl.wait_mesh(timeout=0)
                        re_mesh = el
                    except Failed:
                        pass
                if re_sig is None:
                    views = signed_views(cl.nodes)
                    if converged(views) and len(next(iter(views.values()))) == hosts:
                        re_sig = el
                if re_mesh is not None and re_sig is not None:
                    break
                time.sleep(0.5)
            fig["after_operator_readd"] = {
                "mesh_s": round(re_mesh, 1) if re_mesh is not None else None,
                "signed_s": round(re_sig, 1) if re_sig is not None else None}
            log(f"after every node re-adds every other: {fig['after_operator_readd']}")
        c.check(mesh_s is not None,
                f"discovery did not reconnect the sides within {bound}s of healing "
                f"(writable peers per node: {fig.get('mesh_at_bound')})")
        c.check(sig_s is not None,
                f"signed state did not converge within {bound}s of healing "
                f"(entries per node: {fig.get('signed_entries_at_bound')})")
        fig["counters"] = counters(cl.nodes)
        fig["rss_kib_end"] = rss_range(cl.nodes)
    return c, fig


def churn_rounds(cl, c, rounds, tr, fig, down_long=12, rng=random.Random(7), first=0):
    """Kill -9 and restart nodes (same data dir, same identity) while `tr`
    sends; appends per-round figures to fig["rounds"]."""
    fig.setdefault("rounds", [])
    for r in range(first, first + rounds):
        victim = cl.nodes[1 + rng.randrange(len(cl.nodes) - 1)]
        live = [n for n in cl.nodes if n is not victim and n.alive()]
        long = (r % 2 == 0)
        rec = {"round": r + 1, "victim": victim.name, "kind": "long" if long else "short"}
        t_kill = time.monotonic()
        victim.kill9()
        log(f"churn: kill -9 {victim.name} ({rec['kind']} downtime)")
        # Live nodes change signed state while the victim is down.
        for n in live:
            n.cmd({"cmd": "set", "field": "churn", "value": f"{n.name}-r{r}"})
        if long:
            # Live nodes must stop listing the dead one.
            gone = {}
            while time.monotonic() - t_kill < down_long + 20:
                for n in live:
                    if n.name not in gone and victim.addr not in n.listed():
                        gone[n.name] = time.monotonic() - t_kill
                if len(gone) == len(live):
                    break
                time.sleep(0.25)
            rec["unlisted_after_s_max"] = round(max(gone.values()), 1) if gone else None
            c.check(len(gone) == len(live),
                    f"round {r + 1}: {len(live) - len(gone)} live nodes still list dead "
                    f"{victim.name} after {down_long + 20}s")
            time.sleep(max(0.0, down_long - (time.monotonic() - t_kill)))
        else:
            time.sleep(1.0)
        victim.start()
        t_up = time.monotonic()
        # Rejoin: the restarted node is connected to every live node, and its
        # signed state equals theirs.
        rejoin = sig = None
        while time.monotonic() - t_up < 45:
            el = time.monotonic() - t_up
            if rejoin is None:
                conn, wr = victim.connected_writable()
                if {n.addr for n in live} <= conn:
                    rejoin = el
            if sig is None:
                views = signed_views(live + [victim])
                if converged(views):
                    sig = el
            if rejoin is not None and sig is not None:
                break
            time.sleep(0.25)
        rec["rejoined_s"] = round(rejoin, 1) if rejoin is not None else None
        rec["signed_caught_up_s"] = round(sig, 1) if sig is not None else None
        c.check(rejoin is not None, f"round {r + 1}: {victim.name} did not reconnect in 45s")
        c.check(sig is not None, f"round {r + 1}: {victim.name} signed state not caught up in 45s")
        # Is it writable again on the live side (will their broadcasts reach it)?
        t_w = time.monotonic()
        while True:
            rec["writable_on_live"] = sum(victim.addr in n.connected_writable()[1] for n in live)
            if rec["writable_on_live"] == len(live):
                rec["writable_on_all_live_s"] = round(time.monotonic() - t_up, 1)
                break
            if time.monotonic() - t_w > 10:
                break
            time.sleep(0.5)
        rec["live"] = len(live)
        c.check(rec["writable_on_live"] == len(live),
                f"round {r + 1} ({rec['kind']}): restarted {victim.name} is writable on only "
                f"{rec['writable_on_live']}/{len(live)} live nodes 10s after rejoining (their "
                f"broadcasts skip it)")
        fig["rounds"].append(rec)
        log(f"churn round {r + 1}: {rec}")


def scenario_churn(workdir, hosts=6, rounds=4, rate=5.0):
    """4. Churn: kill -9 / restart (same identity) while others broadcast."""
    c = Checks("4-churn")
    fig = {"hosts": hosts}
    with Cluster(hosts, "s4", workdir) as cl:
        cl.wait_mesh()
        fig["rss_kib_start"] = rss_range(cl.nodes)
        for n in cl.nodes:
            n.cmd({"cmd": "set", "field": "name", "value": n.name})
        tr = Traffic(cl.nodes)
        threads = tr.run(rate=rate, duration=3600)
        try:
            churn_rounds(cl, c, rounds, tr, fig)
        finally:
            tr.stop_flag.set()
            for t in threads:
                t.join()
        time.sleep(5)
        # Delivery to the nodes that were never killed, from everyone.
        fig["counters"] = counters(cl.nodes)
        fig["rss_kib_end"] = rss_range(cl.nodes)
        accs = tr.account([n for n in cl.nodes if n.incarnation == 1])
        fig["to_never_killed"] = {k: accs[k] for k in ("expected", "delivered", "missing",
                                                       "duplicates", "reordered")}
        c.check(accs["duplicates"] == 0, f"duplicates: {accs['duplicates']}")
        c.check(accs["reordered"] == 0, f"reordered: {accs['reordered']}")
        ub = [r["unlisted_after_s_max"] for r in fig["rounds"] if r.get("unlisted_after_s_max")]
        fig["unlisted_after_s_max"] = max(ub) if ub else None
    return c, fig


# ---- scenario 5: hostile host ------------------------------------------------


def hostile_main(args):
    """Runs inside the hostile namespace: garbage, replays (own source and
    spoofed as the legitimate peer), and a full-speed Init flood."""
    target = (args.target, PORT)
    rnd = random.Random(5)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.ports + 64)), hard))
    caps = []
    with open(args.capture, "rb") as f:
        data = f.read()
    off = 0
    while off + 2 <= len(data):
        (n,) = struct.unpack_from("!H", data, off)
        caps.append(data[off + 2: off + 2 + n])
        off += 2 + n
    socks = []
    for _ in range(args.ports):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind((args.src, 0))
        socks.append(s)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    sent = {"garbage": 0, "replay_own": 0, "replay_spoofed": 0, "init": 0, "errors": 0}
    zero_cookie = bytes(16)
    t_end = time.monotonic() + args.duration
    i = 0
    while time.monotonic() < t_end:
        for _ in range(256):
            i += 1
            s = socks[i % len(socks)]
            try:
                k = i % 8
                if args.mix == "init":
                    k = 0
                elif args.mix == "garbage":
                    k = 5
                elif args.mix == "replay":
                    k = 6 + (i & 1)
                if k < 5:  # Init flood: 56-byte Init, random index (not reserved) and e
                    idx = bytearray(os.urandom(4))
                    if 81 <= idx[0] <= 84:
                        idx[0] = 1
                    s.sendto(b"\xe1\x00\x00\x00" + bytes(idx) + os.urandom(32) + zero_cookie,
                             target)
                    sent["init"] += 1
                elif k == 5:  # garbage: random bytes, random length, sometimes a valid type byte
                    n = rnd.randrange(0, 1400)
                    g = bytearray(os.urandom(n))
                    if n >= 4 and rnd.random() < 0.5:
                        g[0] = rnd.choice([0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6])
                        g[1:4] = b"\x00\x00\x00"
                    s.sendto(bytes(g), target)
                    sent["garbage"] += 1
                elif caps:
                    pkt = caps[rnd.randrange(len(caps))]
                    if k == 6:  # replay the UDP payload from our own address
                        ihl = (pkt[0] & 15) * 4
                        s.sendto(pkt[ihl + 8:], target)
                        sent["replay_own"] += 1
                    else:  # replay the whole IP packet, source = the legitimate peer
                        ihl = (pkt[0] & 15) * 4
                        p = bytearray(pkt)
                        p[10:12] = b"\x00\x00"  # kernel fills the IP checksum
                        p[ihl + 6: ihl + 8] = b"\x00\x00"  # UDP checksum 0: none
                        raw.sendto(bytes(p), (args.target, 0))
                        sent["replay_spoofed"] += 1
            except (BlockingIOError, OSError):
                sent["errors"] += 1
    print(json.dumps(sent), flush=True)


def capture(ns, ip, seconds, path, limit=2000):
    """Capture IPv4/UDP datagrams to the node port on `ns`'s eth0 (AF_PACKET)
    into `path` (2-byte length + IP packet)."""
    code = f"""
import socket, struct, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.bind(("eth0", 0x0800))
s.settimeout(0.2)
out = open({path!r}, "wb"); n = 0; end = time.monotonic() + {seconds}
while time.monotonic() < end and n < {limit}:
    try:
        pkt, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if addr[2] == socket.PACKET_OUTGOING or pkt[9] != 17:
        continue
    ihl = (pkt[0] & 15) * 4
    if socket.inet_ntoa(pkt[16:20]) != {ip!r} or struct.unpack_from("!H", pkt, ihl + 2)[0] != {PORT}:
        continue
    out.write(struct.pack("!H", len(pkt)) + pkt); n += 1
print(n)
"""
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)


class EchoLoad:
    """Echo requests from `src` to `dst`. Closed loop (`pace` None: `window`
    in flight, measures capacity) or paced (`pace` requests/s, measures
    whether a steady legitimate stream keeps flowing). `pace` may change
    while running; every completion is recorded with its mode."""

    def __init__(self, src, dst, window=16, size=200):
        self.src, self.dst, self.window = src, dst, window
        self.body = "x" * size
        self.pace = None
        self.done = []  # (t_done, latency_ms, paced)
        self.errors = 0
        self.stop = threading.Event()

    def _send(self):
        return (self.src.send({"cmd": "request", "to": self.dst.addr, "type": "echo",
                               "body": self.body, "timeout_ms": 5000}),
                time.monotonic(), self.pace is not None)

    def run(self):
        from collections import deque
        inflight = deque()
        nxt = time.monotonic()
        while not self.stop.is_set():
            pace = self.pace
            now = time.monotonic()
            if pace:
                if now >= nxt and len(inflight) < 256:
                    inflight.append(self._send())
                    nxt = max(nxt + 1.0 / pace, now - 0.05)
            else:
                nxt = now
                while len(inflight) < self.window:
                    inflight.append(self._send())
            if not inflight:
                time.sleep(0.001)
                continue
            cid, ts, paced = inflight[0]
            try:
                a = self.src.wait_answer(cid, timeout=0.002 if pace else 10)
            except Failed:
                if time.monotonic() - ts > 10:
                    inflight.popleft()
                    self.errors += 1
                continue
            inflight.popleft()
            if a.get("ok"):
                t = time.monotonic()
                self.done.append((t, (t - ts) * 1000, paced))
            else:
                self.errors += 1

    def rate(self, t0, t1, paced):
        return sum(1 for t, _, p in self.done if t0 <= t < t1 and p == paced) / (t1 - t0)

    def lat(self, t0, t1, paced):
        return lat_summary([l for t, l, p in self.done if t0 <= t < t1 and p == paced])


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            w = f.read().rsplit(")", 1)[1].split()
        return int(w[11]) + int(w[12])  # utime + stime
    except OSError:
        return 0


def scenario_hostile(workdir, phase=6, flood=24, pace=300, min_paced=0.8, min_capacity=0.05,
                     rss_factor=2.0, rss_slack_mib=64, ports=2048, mix="all"):
    """5. One namespace sends garbage, replays and an Init flood at a node;
    its memory stays bounded and legitimate traffic keeps flowing."""
    c = Checks("5-hostile")
    fig = {"flood_s": flood, "paced_offered_per_s": pace, "attacker_source_ports": ports,
           "mix": mix}
    with Cluster(3, "s5", workdir, run=[0, 1]) as cl:  # host 3: the attacker, no node
        target, legit = cl.nodes
        cl.wait_mesh(nodes=[target, legit])
        load = EchoLoad(legit, target)
        th = threading.Thread(target=load.run, daemon=True)
        th.start()
        rss = []  # (t, kib)
        stop_rss = threading.Event()

        def sample():
            while not stop_rss.is_set():
                rss.append((time.monotonic(), target.rss()))
                time.sleep(0.25)

        ts = threading.Thread(target=sample, daemon=True)
        ts.start()
        capfile = os.path.join(cl.workdir, "capture.bin")
        cap = capture(cl.net.ns[0], cl.net.ip(0), phase - 1, capfile)
        win = {}

        def measure(name):
            """Closed loop for `phase` s, then paced for `phase` s; the first
            second after each switch is not counted."""
            load.pace = None
            t = time.monotonic()
            time.sleep(phase)
            win[name + "_capacity"] = (t + 1, time.monotonic(), False)
            load.pace = pace
            t = time.monotonic()
            time.sleep(phase)
            win[name + "_paced"] = (t + 1, time.monotonic(), True)

        t_b0 = time.monotonic()
        measure("before")
        fig["captured_datagrams"] = int(cap.communicate()[0] or 0)
        c0 = target.state()["network"]["counters"]
        hp = subprocess.Popen(["ip", "netns", "exec", cl.net.ns[2], sys.executable,
                               os.path.abspath(__file__), "hostile", "--target",
                               cl.net.ip(0), "--src", cl.net.ip(2), "--capture", capfile,
                               "--duration", str(flood), "--ports", str(ports), "--mix", mix],
                              stdout=subprocess.PIPE, text=True)
        t_f0 = time.monotonic()
        cpu0 = cpu_ticks(target.pid)
        half_open = []
        stop_ho = threading.Event()

        def sample_ho():
            while not stop_ho.is_set():
                try:
                    half_open.append(target.state()["network"]["half_open_handshakes"])
                except Failed:
                    pass
                time.sleep(1)

        tho = threading.Thread(target=sample_ho, daemon=True)
        tho.start()
        time.sleep(2)  # let the flood ramp up before measuring
        measure("during")
        hp.wait()
        cpu1 = cpu_ticks(target.pid)
        fig["target_cpu_pct_during"] = round(
            100 * (cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t_f0))
        stop_ho.set()
        tho.join()
        t_f1 = time.monotonic()
        out = hp.stdout.read().strip().splitlines()
        hostile_sent = json.loads(out[-1]) if out else {}
        time.sleep(1)
        measure("after")
        t_a1 = time.monotonic()
        load.stop.set()
        stop_rss.set()
        th.join(timeout=15)
        ts.join()
        c1 = target.state()["network"]["counters"]
        delta = {k: c1[k] - c0.get(k, 0) for k in c1 if c1[k] - c0.get(k, 0)}
        rates = {k: round(load.rate(*w), 1) for k, w in win.items()}
        lats = {k: load.lat(*w) for k, w in win.items() if w[2]}

        def rss_in(t0, t1):
            xs = [k for t, k in rss if t0 <= t < t1 and k]
            return (min(xs), max(xs)) if xs else (None, None)

        rb, rd, ra = rss_in(t_b0, t_f0), rss_in(t_f0, t_f1), rss_in(t_f1 + 1, t_a1 + 1)
        cap_frac = rates["during_capacity"] / rates["before_capacity"] \
            if rates["before_capacity"] else 0
        paced_frac = rates["during_paced"] / rates["before_paced"] if rates["before_paced"] else 0
        fig.update({
            "hostile_sent": hostile_sent,
            "hostile_pps": round(sum(v for k, v in hostile_sent.items() if k != "errors") / flood),
            "echo_per_s": rates,
            "paced_latency": lats,
            "capacity_fraction_during": round(cap_frac, 3),
            "paced_fraction_during": round(paced_frac, 3),
            "echo_errors": load.errors,
            "rss_kib_before": rb[1], "rss_kib_during_max": rd[1], "rss_kib_after": ra[1],
            "half_open_max": max(half_open) if half_open else None,
            "counter_delta": delta,
        })
        c.check(rates["before_capacity"] > 0, "no echo traffic before the flood")
        c.check(paced_frac >= min_paced,
                f"paced echo during flood {rates['during_paced']}/s < {min_paced} x "
                f"{rates['before_paced']}/s before")
        c.check(cap_frac >= min_capacity,
                f"echo capacity during flood {rates['during_capacity']}/s < {min_capacity} x "
                f"{rates['before_capacity']}/s before")
        c.check(rates["after_capacity"] >= 0.5 * rates["before_capacity"],
                f"echo capacity after flood {rates['after_capacity']}/s did not recover")
        bound = rss_factor * (rb[1] or 0) + rss_slack_mib * 1024
        fig["rss_bound_kib"] = int(bound)
        c.check(rd[1] is not None and rd[1] <= bound,
                f"RSS during flood {rd[1]} KiB > bound {bound:.0f} KiB")
        c.check(target.alive(), "target died")
        conn, wr = legit.connected_writable()
        c.check(target.addr in wr, "legitimate session lost")
        if mix in ("all", "replay"):
            c.check(delta.get("replayed_datagrams", 0) > 0, "no replayed datagrams counted")
        if mix in ("all", "garbage"):
            c.check(delta.get("malformed_datagrams", 0) > 0, "garbage not counted as malformed")
        if mix in ("all", "init"):
            c.check(delta.get("throttled_handshakes", 0) + delta.get("cookies_sent", 0) > 0,
                    "Init flood not throttled/cookied")
        c.check(not half_open or max(half_open) <= 1024, "half-open table above its bound")
    return c, fig


# ---- soak --------------------------------------------------------------------


def soak(workdir, duration, hosts=6, loss=10, rate=5.0, churn_every=30):
    """Churn + loss for `duration` seconds; RSS over time, delivery ratios,
    error counters."""
    c = Checks("soak")
    fig = {"hosts": hosts, "loss_pct": loss, "duration_s": duration, "rate_per_sender": rate}
    rng = random.Random(11)
    with Cluster(hosts, "soak", workdir) as cl:
        cl.wait_mesh()
        for i in range(hosts):
            cl.net.rules(i, [cl.net.loss(i, loss)])
        for n in cl.nodes:
            n.cmd({"cmd": "set", "field": "name", "value": n.name})
        tr = Traffic(cl.nodes)
        threads = tr.run(rate=rate, duration=duration)
        rss_series = []
        t0 = time.monotonic()
        incarnations = []  # accounting per node incarnation
        next_churn = t0 + churn_every
        next_rss = t0
        kills = 0
        rounds = {}
        while time.monotonic() - t0 < duration:
            now = time.monotonic()
            if now >= next_rss:
                rss_series.append((round(now - t0), {n.name: n.rss() for n in cl.nodes}))
                next_rss += 30
            if now >= next_churn and now - t0 < duration - 40:
                sub = {}
                churn_rounds(cl, c, 1, tr, sub, rng=rng, first=kills)
                rec = sub["rounds"][0]
                rounds.setdefault("list", []).append(rec)
                kills += 1
                next_churn = time.monotonic() + churn_every
            time.sleep(0.5)
        tr.stop_flag.set()
        for t in threads:
            t.join()
        time.sleep(10)
        rss_series.append((round(time.monotonic() - t0), {n.name: n.rss() for n in cl.nodes}))
        acc = tr.account(cl.nodes)
        never = tr.account([n for n in cl.nodes if n.incarnation == 1])
        fig["kills"] = kills
        fig["rounds"] = rounds.get("list", [])
        fig["rss_kib_series"] = rss_series
        fig["delivery_current_incarnations"] = {k: acc[k] for k in (
            "expected", "delivered", "missing", "duplicates", "reordered")}
        fig["delivery_never_killed"] = {k: never[k] for k in (
            "expected", "delivered", "missing", "duplicates", "reordered")}
        fig["delivery_ratio_never_killed"] = round(
            never["delivered"] / never["expected"], 5) if never["expected"] else None
        fig.update(lat_summary(never["lat"]))
        fig["broadcasts"] = len(tr.sent)
        fig["send_failures"] = len(tr.failed_sends)
        fig["dropped_by_nft"] = sum(cl.net.dropped(i) for i in range(hosts))
        fig["counters"] = counters(cl.nodes)
        fig["rss_kib_end"] = rss_range(cl.nodes)
        c.check(never["duplicates"] == 0, f"duplicates: {never['duplicates']}")
        c.check(never["reordered"] == 0, f"reordered: {never['reordered']}")
        first = {k: v for k, v in rss_series[1][1].items()} if len(rss_series) > 1 else {}
        fig["rss_growth_kib_never_killed"] = {
            n.name: (rss_series[-1][1][n.name] or 0) - (first.get(n.name) or 0)
            for n in cl.nodes if n.incarnation == 1}
    return c, fig



# --------------------------------------------------------------------------
# NAT (issue 13): routers doing NAT with nftables between an "internet"
# bridge and one-host LANs.


class NatNet:
    """An "internet": a bridge (in its own namespace) with public hosts at
    10.78.0.11.. and one router per LAN at 10.78.0.2..; each router NATs a
    one-host LAN (192.168.N.0/24, the host at .2 behind the router's .1)
    with nftables: `masquerade` (endpoint-independent mapping, "cone") or
    `masquerade random` (a random port per connection: endpoint-dependent,
    "symmetric"). Only the routers forward; no route leads into a LAN."""

    def __init__(self, tag, publics, lans, twins=()):
        self.br = f"{PREFIX}-{tag}-br"
        self.publics = [f"{PREFIX}-{tag}-p{i + 1}" for i in range(publics)]
        self.lans = lans  # [(name, nat rule)]
        self.routers = [f"{PREFIX}-{tag}-r{i + 1}" for i in range(len(lans))]
        self.hosts = [f"{PREFIX}-{tag}-l{i + 1}" for i in range(len(lans))]
        # LANs (by index) with a second host, at .3 behind the same router.
        self.twins = {j: f"{PREFIX}-{tag}-l{j + 1}b" for j in twins}
        self.created = []

    def public_addr(self, i):
        return f"10.78.0.{11 + i}:{PORT}"

    def router_ip(self, j):
        return f"10.78.0.{2 + j}"

    def host_addr(self, j):
        return f"192.168.{10 + j}.2:{PORT}"

    def twin_addr(self, j):
        return f"192.168.{10 + j}.3:{PORT}"

    def _ns(self, ns):
        sh("ip", "netns", "add", ns)
        self.created.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def _uplink(self, ns, k, ip):
        sh("ip", "-n", self.br, "link", "add", f"u{k}", "type", "veth",
           "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", self.br, "link", "set", f"u{k}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def create(self):
        self._ns(self.br)
        sh("ip", "-n", self.br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.br, "link", "set", "br0", "up")
        k = 0
        for i, ns in enumerate(self.publics):
            self._ns(ns)
            self._uplink(ns, k, self.public_addr(i).split(":")[0])
            k += 1
        for j, (router, host) in enumerate(zip(self.routers, self.hosts)):
            self._ns(router)
            self._uplink(router, k, self.router_ip(j))
            k += 1
            lan = f"192.168.{10 + j}"
            members = [host] + ([self.twins[j]] if j in self.twins else [])
            if len(members) == 1:
                self._ns(host)
                sh("ip", "-n", router, "link", "add", "lan0", "type", "veth",
                   "peer", "name", "eth0", "netns", host)
                sh("ip", "-n", router, "addr", "add", f"{lan}.1/24", "dev", "lan0")
                sh("ip", "-n", router, "link", "set", "lan0", "up")
            else:
                # Several hosts: a LAN bridge in the router's namespace.
                sh("ip", "-n", router, "link", "add", "lan0", "type", "bridge")
                sh("ip", "-n", router, "addr", "add", f"{lan}.1/24", "dev", "lan0")
                sh("ip", "-n", router, "link", "set", "lan0", "up")
                for h, member in enumerate(members):
                    self._ns(member)
                    sh("ip", "-n", router, "link", "add", f"lp{h}", "type", "veth",
                       "peer", "name", "eth0", "netns", member)
                    sh("ip", "-n", router, "link", "set", f"lp{h}", "master", "lan0", "up")
            for h, member in enumerate(members):
                sh("ip", "-n", member, "addr", "add", f"{lan}.{2 + h}/24", "dev", "eth0")
                sh("ip", "-n", member, "link", "set", "eth0", "up")
                sh("ip", "-n", member, "route", "add", "default", "via", f"{lan}.1")
            sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            # The router's own firewall drops unsolicited packets from the
            # internet addressed to it, as home routers do (OpenWrt's wan
            # zone). Dropped before conntrack confirms them, they leave no
            # entry behind; otherwise Linux would keep one for each such
            # packet, and the LAN host's next datagram to that sender would
            # get another port: a cone turned symmetric for that pair.
            sh("ip", "netns", "exec", router, "nft", "-f", "-", input=(
                "table inet gfw {\n"
                "  chain input { type filter hook input priority 0; policy accept;\n"
                "    iifname \"eth0\" ct state new counter drop\n"
                "  }\n"
                "}\n"))
            self.set_nat(j, self.lans[j][1])
        log(f"nat net {self.br}: {len(self.publics)} public hosts, LANs "
            + ", ".join(f"{n} ({r})" for n, r in self.lans))

    def set_nat(self, j, rule):
        """Replace router j's source NAT by `rule` (e.g. `masquerade`)."""
        sh("ip", "netns", "exec", self.routers[j], "nft", "-f", "-", input=(
            "table ip gnat\n"
            "delete table ip gnat\n"
            "table ip gnat {\n"
            "  chain post { type nat hook postrouting priority 100; policy accept;\n"
            f"    oifname \"eth0\" {rule}\n"
            "  }\n"
            "}\n"))

    def flush_conntrack(self, j):
        """Router j forgets every mapping, as a router restart would."""
        sh("ip", "netns", "exec", self.routers[j], "conntrack", "-F", check=False)

    def destroy(self):
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)
        self.created = []


class NatCluster(Cluster):
    """Nodes on a NatNet; teardown (close, __exit__) is Cluster's.

    By default public node i knows public nodes 0..i-1 (so each has
    observers too) and every LAN node knows every public node. `peers(name,
    publics)` overrides whom a node knows, `extra(name)` adds `gladius node`
    arguments, and `public_names` names the public nodes."""

    def __init__(self, workdir, tag, lans, publics=2, public_names=None, peers=None,
                 extra=None, twins=()):
        self.net = NatNet(tag, publics, lans, twins)
        self.workdir = os.path.join(workdir, tag)
        os.makedirs(self.workdir, exist_ok=True)
        self.nodes = []
        self.public_names = public_names or [f"pub{i + 1}" for i in range(publics)]
        self.peers_of = peers
        self.extra_of = extra or (lambda name: [])

    def __enter__(self):
        CLEANUP.append(self)
        self.net.create()
        n = self.net
        pubs = [n.public_addr(i) for i in range(len(n.publics))]
        for i, ns in enumerate(n.publics):
            name = self.public_names[i]
            peers = self.peers_of(name, pubs) if self.peers_of else pubs[:i]
            self.nodes.append(NsNode(ns, pubs[i], peers, self.workdir, name))
        for j, (name, _) in enumerate(n.lans):
            peers = self.peers_of(name, pubs) if self.peers_of else pubs
            self.nodes.append(NsNode(n.hosts[j], n.host_addr(j), peers, self.workdir, name))
            if j in n.twins:
                twin = f"{name}-twin"
                peers = self.peers_of(twin, pubs) if self.peers_of else pubs
                self.nodes.append(NsNode(n.twins[j], n.twin_addr(j), peers, self.workdir, twin))
        for node in self.nodes:
            node.extra = self.extra_of(node.name)
            node.start()
        return self

    def node(self, name):
        return next(x for x in self.nodes if x.name == name)


class NsNode(Node):
    """A node in a namespace of a `NatNet` (any address, not a `Net` slot)."""

    class _Slot:
        def __init__(self, ns, addr):
            self.ns = [ns]
            self._addr = addr

        def addr(self, i):
            return self._addr

    def __init__(self, ns, addr, peers, workdir, name):
        super().__init__(self._Slot(ns, addr), 0, peers, workdir, name)


def scenario_nat(workdir, count=300, rate=50.0):
    """6. NAT: a node behind a `masquerade` router (cone) and one behind a
    `masquerade random` router (symmetric) each connect to two public
    nodes. Each learns its mapping from the two observers: cone
    `endpoint_independent` with the router's address, symmetric
    `endpoint_dependent`; the public nodes `none`. Then, in the middle of a
    stream from the cone node, its router's NAT rebinds (the rule moves to
    another port range and conntrack is flushed): both public nodes see the
    node roam to the new port; nothing is lost, duplicated or reordered,
    and no handshake is added."""
    c = Checks("6")
    fig = {}
    lans = [("cone", "masquerade"), ("sym", "masquerade random")]
    with NatCluster(workdir, "nat", lans) as cl:
        n = cl.net
        pubs = [cl.node("pub1"), cl.node("pub2")]
        cone, sym = cl.node("cone"), cl.node("sym")

        def net_state(x):
            return x.state()["network"]

        def settled():
            return all(net_state(x)["counters"].get("observations_received", 0) >= 2
                       for x in pubs + [cone, sym])

        t0 = time.monotonic()
        while not settled() and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        fig["classified_after_s"] = round(time.monotonic() - t0, 1)
        nat = {}
        for x in pubs + [cone, sym]:
            st = net_state(x)
            nat[x.name] = {"nat": st.get("nat"), "reflexive_addrs": st.get("reflexive_addrs")}
        fig["nat"] = nat
        for x in pubs:
            c.check(nat[x.name]["nat"] == "none", f"{x.name}: nat {nat[x.name]}")
        c.check(nat["cone"]["nat"] == "endpoint_independent", f"cone: {nat['cone']}")
        c.check(nat["cone"]["reflexive_addrs"] == [f"{n.router_ip(0)}:{PORT}"],
                f"cone reflexive {nat['cone']}")
        c.check(nat["sym"]["nat"] == "endpoint_dependent", f"sym: {nat['sym']}")
        c.check(len(nat["sym"]["reflexive_addrs"] or []) == 2
                and all(a.startswith(n.router_ip(1) + ":") for a in nat["sym"]["reflexive_addrs"]),
                f"sym reflexive {nat['sym']}")

        # NAT rebinding in the middle of a stream from the cone node.
        def hs(x):
            return net_state(x)["counters"].get("handshakes_completed", 0)

        before = {x.name: hs(x) for x in pubs + [cone]}
        tr = Traffic([cone], mtype="nat")
        threads = tr.run(count=count, rate=rate)
        time.sleep(count / rate / 2)
        n.set_nat(0, "meta l4proto udp masquerade to :30000-30999")
        n.flush_conntrack(0)
        t_rebind = time.monotonic()
        log("cone router rebound: masquerade to :30000-30999, conntrack flushed")
        for t in threads:
            t.join()
        acc, waited = tr.wait_complete(pubs, timeout=30)
        fig["rebind_stream"] = {k: v for k, v in acc.items() if k != "lat"}
        fig["rebind_stream"].update(lat_summary(acc["lat"]))
        fig["rebind_wait_s"] = round(waited, 1)
        c.check(acc["missing"] == 0 and acc["duplicates"] == 0 and acc["reordered"] == 0
                and acc["expected"] == count * len(pubs),
                f"stream across the rebinding: {fig['rebind_stream']}")
        after = {x.name: hs(x) for x in pubs + [cone]}
        fig["handshakes_before_after"] = [before, after]
        c.check(before == after, f"no new handshake: {before} -> {after}")
        moved = {}
        for x in pubs:
            st = net_state(x)
            peer = next((p for p in st["peers"]
                         if p.get("active_path", "") and p["active_path"].startswith(n.router_ip(0))),
                        None)
            moved[x.name] = {"path_changes": st["counters"].get("path_changes", 0),
                             "active_path": peer and peer["active_path"]}
            port = int(peer["active_path"].rsplit(":", 1)[1]) if peer else 0
            c.check(st["counters"].get("path_changes", 0) >= 1 and 30000 <= port <= 30999,
                    f"{x.name} moved the cone node's path: {moved[x.name]}")
        fig["after_rebind"] = moved
        ev = [(t, e) for x in pubs for t, e in list(x.events) if e.get("event") == "path_changed"]
        fig["path_changed_events"] = len(ev)
        fig["first_path_changed_after_rebind_ms"] = (
            round((min(t for t, _ in ev) - t_rebind) * 1000) if ev else None)
        c.check(len(ev) >= 2, f"path_changed events at the public nodes: {len(ev)}")
        time.sleep(1.5)
        cst = net_state(cone)
        fig["cone_after_rebind"] = {"nat": cst.get("nat"), "reflexive_addrs": cst.get("reflexive_addrs")}
        c.check(cst.get("nat") == "endpoint_independent"
                and all(a.startswith(n.router_ip(0) + ":3") for a in cst.get("reflexive_addrs", [])),
                f"the cone node learnt its new mapping: {fig['cone_after_rebind']}")
        fig["counters"] = counters(cl.nodes)
    return c, fig


MATRIX_KINDS = ("public", "cone", "symmetric")
NAT_RULES = {"cone": "masquerade", "symmetric": "masquerade random"}


def peer_entry(node, key):
    """`node`'s view of the peer with static key `key` (or None)."""
    for p in node.state()["network"]["peers"]:
        if p.get("public_key") == key:
            return p
    return None


def dial_by_key_and_stream(a, b, mtype, count, rate, connect_timeout, direct_timeout):
    """A adds B by static key alone, then sends B `count` messages. Returns
    the figures: time to connect, to B's first message and to a direct
    path, B's deliveries, the path and A's punch/lookup counters for this
    pair alone."""
    key_b = b.listening.get("public_key")
    res = {}
    punch_keys = ("punch_attempts", "punch_probes", "punch_successes",
                  "punch_failures", "lookups_sent", "relay_fallbacks")
    before = a.state()["network"]["counters"]
    t_add = time.monotonic()
    ans = a.cmd({"cmd": "add", "public_key": key_b}, timeout=connect_timeout + 5)
    res["add"] = {k: ans.get(k) for k in ("ok", "addr", "error")}
    entry = None
    while time.monotonic() - t_add < connect_timeout:
        entry = peer_entry(a, key_b)
        if entry and entry.get("connection") == "connected" and entry.get("writable"):
            break
        time.sleep(0.05)
    res["connected_s"] = round(time.monotonic() - t_add, 2)
    if not (entry and entry.get("connection") == "connected"):
        res["never_connected"] = entry
        return res, []
    res["first_path"] = entry.get("path")
    t_direct = time.monotonic() if entry.get("path") == "direct" else None
    sent = 0
    for seq in range(count):
        if seq % 10 == 0:
            entry = peer_entry(a, key_b) or entry
            if t_direct is None and entry.get("path") == "direct":
                t_direct = time.monotonic()
        r = a.cmd({"cmd": "broadcast_to", "peers": [entry["addr"]], "type": mtype,
                   "body": f"{seq}"})
        if r.get("ok") and not r.get("failed"):
            sent += 1
        time.sleep(1.0 / rate)
    res["sent_ok"] = sent
    got = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with b.cv:
            got = [(t, int(body)) for t, _f, typ, body in b.msgs if typ == mtype]
        if len(got) >= count:
            break
        time.sleep(0.2)
    seqs = [q for _, q in got]
    res["delivered"] = len(set(seqs))
    res["duplicates"] = len(seqs) - len(set(seqs))
    res["in_order"] = seqs == sorted(seqs)
    res["first_message_s"] = round(min(t for t, _ in got) - t_add, 3) if got else None
    while t_direct is None and time.monotonic() - t_add < direct_timeout:
        e = peer_entry(a, key_b)
        if e and e.get("path") == "direct":
            t_direct = time.monotonic()
            break
        time.sleep(0.1)
    e = peer_entry(a, key_b) or {}
    res["path"] = e.get("path")
    res["direct_addr"] = e.get("direct_addr")
    res["relay"] = e.get("relay")
    res["direct_s"] = round(t_direct - t_add, 2) if t_direct else None
    ca = a.state()["network"]["counters"]
    res["counters"] = {k: ca.get(k, 0) - before.get(k, 0) for k in punch_keys}
    return res, seqs


def scenario_nat_matrix(workdir, count=200, rate=100.0, connect_timeout=20.0,
                        direct_timeout=15.0):
    """7. NAT matrix: {public, cone, symmetric} x {public, cone, symmetric}.
    For each cell a fresh pair: A (the first kind) and B (the second), each
    started knowing only the public relay node R (`--relay`), with a route
    table of one (`--table-size 1`: discovery connects nobody else). A adds
    B by its static key alone (`{"cmd":"add","public_key":...}`, no
    address): the library finds B through R and connects by whatever path
    works. A then sends B `count` messages, which B must get exactly once
    and in order. The path must become direct wherever one side is public
    or both are cone; elsewhere it may stay relayed. Then two nodes behind
    the same (cone) router find each other the same way, and must end on a
    direct path between their private addresses. Recorded per cell: time
    from the `add` to the session, to B's first message, and to a direct
    path (if any)."""
    c = Checks("7")
    fig = {"cells": {}}
    # One A and one B of each kind: every cell is a distinct pair.
    ends = [(f"{k}-{side}", k) for side in ("a", "b") for k in MATRIX_KINDS]
    publics = ["relay", "bad-relay"] + [name for name, k in ends if k == "public"]
    lans = [(name, NAT_RULES[k]) for name, k in ends if k != "public"]
    lans.append(("same", NAT_RULES["cone"]))
    same_lan = len(lans) - 1
    # Two symmetric nodes whose only peer is a relay that corrupts every
    # 5th and drops every 7th datagram it forwards (`--relay-faults`, a
    # test build's hidden flag).
    lans += [("tampered-a", NAT_RULES["symmetric"]), ("tampered-b", NAT_RULES["symmetric"])]

    def peers(name, pubs):
        if name in ("relay", "bad-relay"):
            return []
        return [pubs[1]] if name.startswith("tampered") else [pubs[0]]

    def extra(name):
        # The ends keep a route table of one (the relay), so discovery
        # does not connect them to each other on its own: each cell
        # measures the dial by key, the relay and the punch.
        if name == "relay":
            return ["--relay"]
        if name == "bad-relay":
            return ["--relay", "--relay-faults", "5,7"]
        return ["--table-size", "1"]

    with NatCluster(workdir, "matrix", lans, publics=len(publics), public_names=publics,
                    peers=peers, extra=extra, twins=(same_lan,)) as cl:
        relay, bad = cl.node("relay"), cl.node("bad-relay")
        others = len(cl.nodes) - 4  # not the relays, not the tampered pair
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            if len(relay.connected_writable()[0]) >= others \
                    and len(bad.connected_writable()[0]) >= 2:
                break
            time.sleep(0.2)
        fig["relay_peers_after_s"] = round(time.monotonic() - t0, 1)
        c.check(len(relay.connected_writable()[0]) >= others,
                f"every end node connected to the relay: {relay.connected_writable()[0]}")
        for ka in MATRIX_KINDS:
            for kb in MATRIX_KINDS:
                cell = f"{ka}->{kb}"
                a, b = cl.node(f"{ka}-a"), cl.node(f"{kb}-b")
                res, seqs = dial_by_key_and_stream(a, b, f"m-{ka}-{kb}", count, rate,
                                                   connect_timeout, direct_timeout)
                fig["cells"][cell] = res
                log(f"cell {cell}: {res}")
                c.check(seqs == list(range(count)),
                        f"{cell}: {count} messages exactly once in order: {res}")
                must_direct = "public" in (ka, kb) or (ka == kb == "cone")
                if must_direct:
                    c.check(res.get("path") == "direct", f"{cell}: path should be direct: {res}")
                else:
                    c.check(res.get("path") in ("direct", "relayed"), f"{cell}: path {res}")
        a, b = cl.node("same"), cl.node("same-twin")
        res, seqs = dial_by_key_and_stream(a, b, "m-same", count, rate, connect_timeout,
                                           direct_timeout)
        fig["same_nat"] = res
        log(f"same NAT: {res}")
        c.check(seqs == list(range(count)), f"same NAT: {count} messages once in order: {res}")
        c.check(res.get("path") == "direct" and res.get("direct_addr") == cl.net.twin_addr(same_lan),
                f"same NAT: direct on the private address {cl.net.twin_addr(same_lan)}: {res}")
        # The tampering relay: the ends detect it, nothing forged is
        # delivered, nothing is lost or duplicated (the A-B session resends
        # what the relay spoilt or dropped), no new handshake.
        a, b = cl.node("tampered-a"), cl.node("tampered-b")
        b_before = b.state()["network"]["counters"]
        res, seqs = dial_by_key_and_stream(a, b, "m-tampered", count, rate, connect_timeout,
                                           direct_timeout)
        cb = b.state()["network"]["counters"]
        ca = a.state()["network"]["counters"]
        cr = bad.state()["network"]["counters"]
        res["b_decrypt_failures"] = cb.get("decrypt_failures", 0) - b_before.get("decrypt_failures", 0)
        res["a_decrypt_failures"] = ca.get("decrypt_failures", 0)
        res["relay_forwarded"] = cr.get("relay_forwarded", 0)
        with b.cv:
            stray = [(typ, body) for _t, _f, typ, body in b.msgs
                     if typ.startswith("m-") and typ != "m-tampered"]
        fig["tampering_relay"] = res
        log(f"tampering relay: {res}")
        c.check(seqs == list(range(count)),
                f"tampering relay: {count} messages exactly once in order: {res}")
        c.check(res.get("path") == "relayed", f"tampering relay: relayed pair: {res}")
        c.check(res["b_decrypt_failures"] + res["a_decrypt_failures"] > 0,
                f"tampering relay: the ends detect it (decrypt_failures): {res}")
        c.check(not stray, f"tampering relay: nothing else delivered: {stray[:5]}")
        fig["relay_counters"] = counters([relay])
    return c, fig

def scenario_send_buffer(workdir, count=60, size=60_000, rate_mbit=20, buffer_bytes=65_536):
    """8. A full socket send buffer: host 1's link is slow (a tbf qdisc on
    its egress, which holds datagrams while they count against the
    socket's buffer) and its UDP buffers are small (`socket_buffer_bytes`),
    so a bulk stream finds the buffer full again and again (EAGAIN). The
    node waits for room and goes on: every message arrives once, whole, in
    order; no send error; the waits are counted (`send_buffer_full`)."""
    c = Checks("8-send-buffer")
    fig = {"messages": count, "body_bytes": size, "egress_mbit": rate_mbit,
           "socket_buffer_bytes": buffer_bytes}
    config = os.path.join(workdir, "s8-a.toml")
    with open(config, "w") as f:
        f.write(f"socket_buffer_bytes = {buffer_bytes}\n")
    with Cluster(2, "s8", workdir, extra={0: ["--config", config]}) as cl:
        a, b = cl.nodes
        fig["mesh_s"] = round(cl.wait_mesh(), 1)
        # The queue holds 4 MB (far more than the socket's buffer), so the
        # socket fills before the qdisc drops anything.
        sh("ip", "netns", "exec", cl.net.ns[0], "tc", "qdisc", "add", "dev", "eth0", "root",
           "tbf", "rate", f"{rate_mbit}mbit", "burst", "64kb", "limit", "4mb")
        before = a.state()["network"]["counters"]
        t0 = time.monotonic()
        for seq in range(count):
            body = f"{seq}:" + "x" * (size - len(f"{seq}:"))
            r = a.cmd({"cmd": "broadcast_to", "peers": [b.addr], "type": "bulk", "body": body})
            c.check(r.get("ok") and not r.get("failed"), f"send {seq}: {r}")
        got = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with b.cv:
                got = [body for _t, _f, typ, body in b.msgs if typ == "bulk"]
            if len(got) >= count:
                break
            time.sleep(0.2)
        fig["seconds_to_deliver"] = round(time.monotonic() - t0, 1)
        seqs = [int(body.split(":", 1)[0]) for body in got]
        fig["delivered"] = len(set(seqs))
        c.check(seqs == list(range(count)),
                f"delivered {len(set(seqs))} of {count}, duplicates {len(seqs) - len(set(seqs))}, "
                f"in order {seqs == sorted(seqs)}")
        c.check(all(len(body) == size for body in got), "a message arrived cut or padded")
        after = a.state()["network"]["counters"]
        delta = {k: after.get(k, 0) - before.get(k, 0)
                 for k in ("send_buffer_full", "send_errors", "datagrams_out")}
        fig["counters"] = delta
        c.check(delta["send_buffer_full"] > 0,
                "the send buffer was never full: the scenario tested nothing")
        # The only send errors allowed: datagram-size probes larger than the
        # veth's 1500-byte MTU, which the kernel refuses (EMSGSIZE) and the
        # session counts as lost probes.
        peer = next(p for p in a.state()["network"]["peers"] if p["addr"] == b.addr)
        fig["size_probes_lost"] = peer.get("size_probes_lost", 0)
        c.check(delta["send_errors"] <= fig["size_probes_lost"],
                f"{delta['send_errors']} send errors, {fig['size_probes_lost']} lost size probes")
    return c, fig


SCENARIOS = {
    "1": ("8 hosts, 10% loss everywhere", scenario_loss_mesh),
    "2": ("30% loss on one host", scenario_lossy_host),
    "3": ("partition 4|4 for 20 s, heal", scenario_partition),
    "4": ("churn: kill -9 and restart", scenario_churn),
    "3long": ("partition 4|4 for 20 s, heal, wait past the 5 min tombstone TTL",
              lambda w: scenario_partition(w, bound=420)),
    "5": ("hostile host", scenario_hostile),
    "6": ("NAT: cone and symmetric routers, rebinding mid-stream", scenario_nat),
    "7": ("NAT matrix: {public, cone, symmetric}^2, dial by key, direct or relayed",
          scenario_nat_matrix),
    "8": ("a full socket send buffer on a slow link", scenario_send_buffer),
    # Not in the CI set: the hostile inputs one kind at a time, for the docs.
    "5init": ("hostile host, Init flood only", lambda w: scenario_hostile(w, mix="init")),
    "5garbage": ("hostile host, garbage only", lambda w: scenario_hostile(w, mix="garbage")),
    "5replay": ("hostile host, replays only", lambda w: scenario_hostile(w, mix="replay")),
    "5ports512": ("hostile host, 512 source ports",
                  lambda w: scenario_hostile(w, ports=512)),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run scenarios")
    r.add_argument("scenarios", nargs="*", default=["1", "2", "3", "5"])
    r.add_argument("--out", help="write the JSON summary here too")
    r.add_argument("--xfail", action="append", default=[], metavar="SCENARIO",
                   help="a scenario known to fail (a library bug): its failure is reported "
                        "loudly but does not fail the run; if it passes, the run fails "
                        "(XPASS) so the marker gets removed")
    s = sub.add_parser("soak", help="churn + loss for --duration seconds")
    s.add_argument("--duration", type=float, default=600)
    s.add_argument("--out")
    h = sub.add_parser("hostile", help=argparse.SUPPRESS)
    h.add_argument("--target")
    h.add_argument("--src")
    h.add_argument("--capture")
    h.add_argument("--duration", type=float)
    h.add_argument("--ports", type=int, default=512)
    h.add_argument("--mix", default="all", choices=["all", "init", "garbage", "replay"])
    args = ap.parse_args()
    if args.cmd == "hostile":
        return hostile_main(args)

    def on_signal(sig, frm):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    workdir = tempfile.mkdtemp(prefix=f"{PREFIX}-")
    results = {"bin": BIN, "prefix": PREFIX, "workdir": workdir, "scenarios": {}}
    ok = True
    try:
        todo = [("soak", ("soak", lambda w: soak(w, args.duration)))] if args.cmd == "soak" \
            else [(k, SCENARIOS[k]) for k in args.scenarios]
        for key, (title, fn) in todo:
            log(f"=== scenario {key}: {title}")
            t = time.monotonic()
            try:
                chk, fig = fn(workdir)
                fails = chk.failures
            except Failed as e:
                fig, fails = {}, [f"aborted: {e}"]
                log(f"FAIL [{key}] aborted: {e}")
            fig["seconds"] = round(time.monotonic() - t, 1)
            fig["passed"] = not fails
            fig["failures"] = fails
            xfail = key in getattr(args, "xfail", [])
            if xfail:
                fig["xfail"] = True
                verdict = "XFAIL (known library bug, see docs/reliability.md)" if fails \
                    else "XPASS (marked --xfail but passed: remove the marker)"
                ok &= bool(fails)
                if fails:
                    log("!" * 70)
                    log(f"!!! scenario {key} FAILED AS EXPECTED (--xfail {key}): " + "; ".join(fails))
                    log("!" * 70)
            else:
                verdict = "PASS" if not fails else "FAIL"
                ok &= not fails
            results["scenarios"][key] = fig
            log(f"=== scenario {key}: {verdict} in {fig['seconds']}s: "
                + json.dumps({k: v for k, v in fig.items() if k not in ('counters', 'rss_kib_series')}))
    finally:
        for cl in list(CLEANUP):
            cl.close()
        leftover = [ns for ns in sh("ip", "netns", "list", check=False).split()
                    if ns.startswith(PREFIX)]
        for ns in leftover:
            sh("ip", "netns", "del", ns, check=False)
        if ok and not os.environ.get("GNT_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"node logs kept in {workdir}")
    results["passed"] = ok
    line = json.dumps(results)
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(results, indent=1) + "\n")
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
