#!/usr/bin/env python3
# Usage: cargo build --release -p adapter-common --example crash_probe
#        python3 scripts/storage-crash-harness.py [kill] [power] [nested]   (needs strace)
"""Crash-injection driver for adapter-common/examples/crash_probe.rs.

Phase 1 (kill): for every syscall S in SYSCALLS and N in 1..count_S (count from a clean
traced run), run `crash_probe <dir> run` under
`strace -f -e trace=S -e inject=S:signal=KILL:when=N`, then `crash_probe <copy> recover`,
and check: recovery succeeds, the state equals the reference after some prefix k with
last_acked <= k <= last_started, and the storage keeps working afterwards.

Phase 2 (power loss): from the clean run's trace (strace -y), model per file the size at its
last fsync/fdatasync and the directory entries at the last directory fsync; for each kill point
build variants of the killed directory: unsynced bytes truncated / zeroed / first unsynced page
zeroed with the tail intact, and directory operations since the last directory fsync undone.
Recover each and check the same contract.

Phase 3 (nested): kill recovery itself (`crash_probe <dir> open`) at each of its syscalls, for
every distinct crashed state from phases 1-2, then recover again and check.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict

BIN = os.environ.get("PROBE", "target/release/examples/crash_probe")
STRACE = "/usr/bin/strace"
ROOT = os.environ.get("ROOT", "target/crash-harness")
SYSCALLS = ["write", "fdatasync", "fsync", "rename", "unlink", "openat", "ftruncate"]
TIMEOUT = 30
PAGE = 4096

violations = []
stats = defaultdict(int)


def sh(cmd, timeout=TIMEOUT, stdout_path=None):
    with open(stdout_path or os.devnull, "w") as out:
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stderr.decode(errors="replace")


def read_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def progress(lines):
    acked = max([int(l.split()[1]) for l in lines if l.startswith("acked ")] or [0])
    started = max([int(l.split()[1]) for l in lines if l.startswith("start ")] or [0])
    return acked, started


def dir_hash(d):
    h = hashlib.sha256()
    for name in sorted(os.listdir(d)):
        if name == "LOCK":
            continue
        h.update(name.encode() + b"\0")
        with open(os.path.join(d, name), "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def check_recover(d, acked, started, label, repro):
    """Runs `recover` on a copy of d; returns the RESULT line; records violations."""
    work = d + ".rec"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(d, work)
    out = work + ".txt"
    try:
        rc, err = sh([BIN, work, "recover"], stdout_path=out)
    except subprocess.TimeoutExpired:
        violations.append((label, "recover timed out", repro))
        return None
    lines = read_lines(out)
    res = [l for l in lines if l.startswith("RESULT")]
    cont = [l for l in lines if l.startswith("CONTINUE")]
    stats["recoveries"] += 1
    if rc != 0 or not res:
        violations.append((label, f"recover exit {rc} (panic?) stderr={err.strip()[-400:]}", repro))
        return None
    r = res[0]
    if r.startswith("RESULT error"):
        violations.append((label, f"recovery failed after acked={acked} started={started}: {r}", repro))
        return r
    m = re.search(r"match=(\S+)", r).group(1)
    ks = [] if m == "NONE" else [int(x) for x in m.split(",")]
    if not any(acked <= k <= started for k in ks):
        violations.append((label, f"recovered state matches prefixes {m}, need one in [{acked},{started}]: {r}", repro))
    if not cont or cont[0] != "CONTINUE ok":
        violations.append((label, f"after recovery: {cont}", repro))
    return r


# ---------------------------------------------------------------------------------------------
# Trace model


LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)(.*)$")


def parse_trace(path, data_dir):
    """Events of interest, in order: (syscall, args_str, result, fd_path_of_result)."""
    events = []
    for line in read_lines(path):
        m = LINE.match(line)
        if not m:
            continue
        _, name, args, res, rest = m.groups()
        events.append((name, args, int(res), rest))
    return events


def model(events, data_dir):
    """For every event index g, the model state *before* event g executes.

    Returns a list of snapshots: dict(entries={name: inode}, durable_entries={name: inode},
    size={inode: n}, durable={inode: n}, removed_at={inode: g}) -- all copies.
    """
    fds = {}  # fd -> ("dir",) or ("file", inode)
    entries = {}
    durable_entries = {}
    size = {}
    durable = {}
    next_inode = [0]
    states = []
    prefix = data_dir.rstrip("/") + "/"
    last_link_removed = {}  # inode -> event index that removed its last name

    def fd_of(args):
        m = re.match(r"(\d+)<", args)
        return int(m.group(1)) if m else None

    for g, (name, args, res, rest) in enumerate(events):
        states.append(dict(
            entries=dict(entries), durable_entries=dict(durable_entries),
            size=dict(size), durable=dict(durable),
        ))
        if res < 0:
            continue
        if name == "openat":
            m = re.match(r'[^,]+, "([^"]*)", ([A-Z_|]+)', args)
            path, flags = m.group(1), m.group(2)
            if path.rstrip("/") == data_dir.rstrip("/"):
                fds[res] = ("dir",)
            elif path.startswith(prefix):
                fname = path[len(prefix):]
                if fname not in entries:
                    next_inode[0] += 1
                    ino = next_inode[0]
                    entries[fname] = ino
                    size[ino] = 0
                    durable[ino] = 0
                ino = entries[fname]
                if "O_TRUNC" in flags:
                    size[ino] = 0
                fds[res] = ("file", ino)
        elif name == "close":
            fds.pop(fd_of(args), None)
        elif name == "write":
            f = fds.get(fd_of(args))
            if f and f[0] == "file":
                size[f[1]] += res
        elif name in ("fsync", "fdatasync"):
            f = fds.get(fd_of(args))
            if f and f[0] == "dir":
                durable_entries = dict(entries)
            elif f and f[0] == "file":
                durable[f[1]] = size[f[1]]
        elif name == "ftruncate":
            m = re.match(r"(\d+)<[^>]*>, (\d+)", args)
            f = fds.get(int(m.group(1)))
            if f and f[0] == "file":
                size[f[1]] = int(m.group(2))
        elif name == "rename":
            m = re.match(r'"([^"]*)", "([^"]*)"', args)
            a, b = m.group(1)[len(prefix):], m.group(2)[len(prefix):]
            if b in entries:
                last_link_removed.setdefault(entries[b], g)
            entries[b] = entries.pop(a)
        elif name == "unlink":
            m = re.match(r'"([^"]*)"', args)
            fname = m.group(1)[len(prefix):]
            last_link_removed.setdefault(entries[fname], g)
            entries.pop(fname)
    return states, last_link_removed


# ---------------------------------------------------------------------------------------------


def main():
    os.makedirs(ROOT, exist_ok=True)
    phases = sys.argv[1:] or ["kill", "power", "nested"]
    clean_dir = os.path.join(ROOT, "clean", "d")
    shutil.rmtree(os.path.join(ROOT, "clean"), ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "clean"))
    trace = os.path.join(ROOT, "clean", "trace")
    rc, err = sh([STRACE, "-f", "-y", "-qq", "-o", trace, "-e",
                  "trace=openat,write,fdatasync,fsync,rename,unlink,ftruncate,close,"
                  "renameat,renameat2,unlinkat,pwrite64,truncate,mkdir",
                  BIN, clean_dir, "run"], stdout_path=os.path.join(ROOT, "clean", "out"))
    assert rc == 0, err
    events = parse_trace(trace, clean_dir)
    for other in ("renameat", "renameat2", "unlinkat", "pwrite64", "truncate"):
        assert not any(e[0] == other for e in events), other
    counts = defaultdict(int)
    index_of = {}  # (syscall, n) -> global event index
    for g, e in enumerate(events):
        counts[e[0]] += 1
        index_of[(e[0], counts[e[0]])] = g
    print("clean run syscall counts:", {s: counts[s] for s in SYSCALLS}, flush=True)
    states, last_link_removed = model(events, clean_dir)
    kill_dirs = {}  # global event index -> (kill dir, acked, started)

    # ---- Phase 1: kill at every syscall -----------------------------------------------------
    for s in SYSCALLS:
        for n in range(1, counts[s] + 2):
            base = os.path.join(ROOT, f"{s}-{n}")
            shutil.rmtree(base, ignore_errors=True)
            os.makedirs(base)
            d = os.path.join(base, "d")
            cmd = [STRACE, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={s}",
                   "-e", f"inject={s}:signal=KILL:when={n}", BIN, d, "run"]
            repro = (f"rm -rf /tmp/crash && {STRACE} -f -qq -o /dev/null -e trace={s} "
                     f"-e inject={s}:signal=KILL:when={n} {BIN} /tmp/crash run; "
                     f"{BIN} /tmp/crash recover")
            rc, err = sh(cmd, stdout_path=os.path.join(base, "out"))
            lines = read_lines(os.path.join(base, "out"))
            acked, started = progress(lines)
            if n == counts[s] + 1:
                # One past the count: must run to the end (determinism check).
                if rc != 0 or "done" not in lines:
                    violations.append((f"{s}-{n}", f"count check: expected a clean run, rc={rc}", repro))
                continue
            stats["kill_points"] += 1
            if rc == 0 or "done" in lines:
                violations.append((f"{s}-{n}", f"not killed (rc={rc})", repro))
                continue
            if any(l.startswith("ERROR") for l in lines):
                violations.append((f"{s}-{n}", f"run reported {lines}", repro))
            if not os.path.isdir(d):
                continue  # killed before the directory existed
            g = index_of[(s, n)]
            kill_dirs[g] = (d, acked, started)
            check_recover(d, acked, started, f"kill {s}#{n} (event {g})", repro)
    print("phase 1 done:", dict(stats), "violations so far:", len(violations), flush=True)

    # ---- Phase 2: power loss on top of every kill point -------------------------------------
    if "power" in phases:
        seen = set()
        for g in sorted(kill_dirs):
            d, acked, started = kill_dirs[g]
            st = states[g]
            name, args = events[g][0], events[g][1]
            label_base = f"power@event{g} ({name} {args[:60]})"
            kill_repro = None
            for (s, n), gi in index_of.items():
                if gi == g:
                    kill_repro = (s, n)
            variants = {}
            # Content of every current file, with what is unsynced.
            cur = {}
            for fname, ino in st["entries"].items():
                if fname == "LOCK":
                    continue
                p = os.path.join(d, fname)
                if not os.path.exists(p):
                    violations.append((label_base, f"model says {fname} exists but it does not", ""))
                    continue
                with open(p, "rb") as f:
                    data = f.read()
                if len(data) != st["size"][ino]:
                    violations.append((label_base, f"model size of {fname} {st['size'][ino]} != {len(data)}", ""))
                cur[fname] = (ino, data)

            def content(ino, data, how):
                dur = min(st["durable"][ino], len(data))
                if how == "keep" or dur >= len(data):
                    return data
                if how == "trunc":
                    return data[:dur]
                if how == "zero":
                    return data[:dur] + bytes(len(data) - dur)
                if how == "half":
                    return data[:dur + (len(data) - dur) // 2]
                if how == "zerotail":
                    # The first unsynced page landed, the rest reads as zeros (size kept).
                    end = min(len(data), (dur // PAGE + 1) * PAGE)
                    if end >= len(data):
                        end = dur + (len(data) - dur) // 2
                    return data[:end] + bytes(len(data) - end)
                if how in ("stale-zero", "stale-keep"):
                    # The blocks allocated after the last sync expose stale blocks of earlier
                    # (deleted) segments, as a file system without data ordering (ext4
                    # data=writeback) may after a power loss. The block that holds the synced
                    # end was allocated before: its unsynced part is zeros or the new data.
                    if not stale or not fname_of.get(ino, "").startswith("log-"):
                        return None
                    boundary = -(-dur // PAGE) * PAGE
                    if boundary >= len(data):
                        return None
                    head = data[dur:boundary] if how == "stale-keep" else bytes(boundary - dur)
                    n = len(data) - boundary
                    fill = (stale * (n // len(stale) + 1))[:n]
                    return data[:dur] + head + fill
                if how == "zerohead":
                    # Zero the first unsynced page (or half of a sub-page region), keep the tail.
                    end = min(len(data), (dur // PAGE + 1) * PAGE)
                    if end >= len(data):
                        end = dur + max(1, (len(data) - dur) // 2)
                    return data[:dur] + bytes(end - dur) + data[end:]
                raise ValueError(how)

            def find_removed(ino):
                """Content of an inode that is no longer linked, from the kill run at the event
                that removed its last name."""
                gr = last_link_removed.get(ino)
                if gr is None or gr not in kill_dirs or gr > g:
                    return None
                kd = kill_dirs[gr][0]
                for fname, i2 in states[gr]["entries"].items():
                    if i2 == ino:
                        with open(os.path.join(kd, fname), "rb") as f:
                            return f.read()
                return None

            fname_of = {ino: fn for fn, (ino, _) in cur.items()}
            fname_of.update({ino: fn for fn, ino in st["durable_entries"].items()})
            stale = b""
            for ino, gr in sorted(last_link_removed.items(), key=lambda x: x[1]):
                if gr <= g:
                    old_bytes = find_removed(ino)
                    if old_bytes and any(fn.startswith("log-") and i2 == ino
                                         for fn, i2 in states[gr]["entries"].items()):
                        # Newest freed first: the most likely to be reallocated.
                        stale = old_bytes + bytes(-len(old_bytes) % PAGE) + stale
            for how in ("trunc", "zero", "zerohead", "half", "zerotail", "stale-zero", "stale-keep"):
                files = {fn: content(ino, data, how) for fn, (ino, data) in cur.items()}
                if any(v is None for v in files.values()):
                    continue
                variants[how] = files
                # Directory operations since the last directory fsync undone.
                if st["durable_entries"] != st["entries"]:
                    files2 = {}
                    ok = True
                    for fname, ino in st["durable_entries"].items():
                        if fname == "LOCK":
                            continue
                        data = None
                        for fn2, (i2, d2) in cur.items():
                            if i2 == ino:
                                data = d2
                        if data is None:
                            data = find_removed(ino)
                        if data is None:
                            ok = False
                            violations.append((label_base, f"harness: no content for inode {ino} ({fname})", ""))
                            break
                        files2[fname] = content(ino, data, how)
                        if files2[fname] is None:
                            ok = False
                    if ok:
                        variants[how + "+dirrevert"] = files2
            for vname, files in variants.items():
                vdir = os.path.join(ROOT, f"power-{g}-{vname}", "d")
                shutil.rmtree(os.path.dirname(vdir), ignore_errors=True)
                os.makedirs(vdir)
                for fn, data in files.items():
                    with open(os.path.join(vdir, fn), "wb") as f:
                        f.write(data)
                h = dir_hash(vdir)
                if h in seen or h == dir_hash(d):
                    stats["power_variants_duplicate"] += 1
                    shutil.rmtree(os.path.dirname(vdir))
                    continue
                seen.add(h)
                stats["power_variants"] += 1
                s, n = kill_repro
                desc = {fn: (len(data), st["durable"].get(st["entries"].get(fn, st["durable_entries"].get(fn)), None))
                        for fn, data in files.items()}
                repro = (f"kill with `strace -e trace={s} -e inject={s}:signal=KILL:when={n} {BIN} /tmp/crash run`, "
                         f"then apply '{vname}' (files -> (len, synced len)): {json.dumps(desc)}; "
                         f"kept as {vdir}; `{BIN} <copy of it> recover`")
                check_recover(vdir, acked, started, f"{label_base} variant {vname}", repro)
        print("phase 2 done:", dict(stats), "violations so far:", len(violations), flush=True)

    # ---- Phase 3: kill recovery itself ------------------------------------------------------
    if "nested" in phases:
        sources = []
        seen = set()
        for g in sorted(kill_dirs):
            d, acked, started = kill_dirs[g]
            sources.append((d, acked, started, f"kill@event{g}"))
        for name in sorted(os.listdir(ROOT)):
            if name.startswith("power-"):
                d = os.path.join(ROOT, name, "d")
                g = int(name.split("-")[1])
                _, acked, started = kill_dirs[g]
                sources.append((d, acked, started, name))
        for d, acked, started, label in sources:
            h = dir_hash(d)
            if h in seen:
                continue
            seen.add(h)
            stats["nested_sources"] += 1
            # Count recovery's syscalls on a copy.
            probe = d + ".ncount"
            shutil.rmtree(probe, ignore_errors=True)
            shutil.copytree(d, probe)
            ntrace = probe + ".trace"
            sh([STRACE, "-f", "-qq", "-o", ntrace, "-e", "trace=" + ",".join(SYSCALLS), BIN, probe, "open"])
            ncounts = defaultdict(int)
            for e in parse_trace(ntrace, probe):
                ncounts[e[0]] += 1
            shutil.rmtree(probe)
            for s in SYSCALLS:
                for n in range(1, ncounts[s] + 1):
                    w = d + f".n-{s}-{n}"
                    shutil.rmtree(w, ignore_errors=True)
                    shutil.copytree(d, w)
                    rc, _ = sh([STRACE, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={s}",
                                "-e", f"inject={s}:signal=KILL:when={n}", BIN, w, "open"])
                    stats["nested_kill_points"] += 1
                    repro = (f"cp -r {d} /tmp/n && {STRACE} -f -qq -o /dev/null -e trace={s} "
                             f"-e inject={s}:signal=KILL:when={n} {BIN} /tmp/n open; {BIN} /tmp/n recover")
                    check_recover(w, acked, started, f"nested {label} kill {s}#{n}", repro)
                    shutil.rmtree(w, ignore_errors=True)
                    shutil.rmtree(w + ".rec", ignore_errors=True)
        print("phase 3 done:", dict(stats), flush=True)

    print("\n==== SUMMARY ====")
    print(json.dumps(dict(stats)))
    print(f"{len(violations)} violations")
    for v in violations:
        print("VIOLATION:", v[0], "|", v[1], "|", v[2])
    with open(os.path.join(ROOT, "violations.json"), "w") as f:
        json.dump(violations, f, indent=1)


if __name__ == "__main__":
    main()
