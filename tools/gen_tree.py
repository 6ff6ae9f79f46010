#!/usr/bin/env python3
"""Generate a deterministic mixed file tree for reel's benchmarks and demo.

    gen_tree.py DIR --size-mb N [--files N] [--seed S]   create a tree of about N MB
    gen_tree.py DIR --mutate DAY --percent P [--seed S]  change about P% of its bytes
    gen_tree.py DIR --small-files N [--seed S]           create N tiny files, fast

The tree looks like a working volume: mostly text (prose, source code, logs; compressible),
some incompressible binary, a few large files (a page-structured database, a big log, a disk
image), and many small files, spread over nested directories. The same arguments always give
the same names and bytes (only the mtimes are the kernel's), so reel, restic and borg are
measured on identical data.

--mutate changes the tree the way a day of work does: edits in place inside large files, appends
to logs, rewritten small files, a few new and a few deleted files. The changed byte count is
about P% of the tree's size (printed at the end). Each DAY differs.

Only the standard library is used.
"""

import argparse
import os
import random
import sys

MB = 1024 * 1024

WORDS = None  # vocabulary, built once per seed
CODE_POOL = None  # source-like lines


def build_vocab(seed):
    """A few thousand pseudo-words and code lines; deterministic for a seed."""
    global WORDS, CODE_POOL
    rng = random.Random(seed * 7919 + 1)
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    weights = [26 - i for i in range(26)]
    words = set()
    while len(words) < 3000:
        n = rng.choice((2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 11))
        words.add("".join(rng.choices(letters, weights=weights, k=n)))
    WORDS = sorted(words)
    kw = ["let", "fn", "if", "for", "return", "match", "impl", "struct", "pub", "use", "const"]
    lines = []
    for _ in range(6000):
        depth = "    " * rng.randint(0, 3)
        a, b, c = rng.sample(WORDS, 3)
        form = rng.randint(0, 5)
        if form == 0:
            s = f"{depth}let {a}_{b} = {c}({rng.randint(0, 4096)});"
        elif form == 1:
            s = f"{depth}{rng.choice(kw)} {a}({b}: &{c.capitalize()}) -> Result<{a.capitalize()}> {{"
        elif form == 2:
            s = f"{depth}}}"
        elif form == 3:
            s = f"{depth}// {a} {b} {c} {rng.choice(WORDS)} {rng.choice(WORDS)}"
        elif form == 4:
            s = f"{depth}if {a}.{b} > {rng.randint(0, 999)} {{ return Err({c}); }}"
        else:
            s = f"{depth}{a}.{b}({c}, 0x{rng.getrandbits(16):04x});"
        lines.append(s)
    CODE_POOL = lines


def prose(rng, n):
    out = []
    size = 0
    while size < n:
        k = rng.randint(8, 20)
        line = " ".join(rng.choices(WORDS, k=k))
        line = line[0].upper() + line[1:] + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def code(rng, n):
    out = []
    size = 0
    while size < n:
        block = rng.choices(CODE_POOL, k=64)
        s = "\n".join(block) + "\n"
        out.append(s)
        size += len(s)
    return "".join(out).encode()[:n]


def log(rng, n, t0=1_790_000_000):
    levels = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
    out = []
    size = 0
    t = t0 + rng.randint(0, 10_000_000)
    while size < n:
        t += rng.randint(0, 3)
        w = rng.choices(WORDS, k=4)
        s = (
            f"{t}.{rng.randint(0, 999):03d} {rng.choice(levels)} worker-{rng.randint(0, 31)} "
            f"{w[0]} {w[1]} id={rng.getrandbits(40):010x} took={rng.randint(0, 5000)}ms {w[2]} {w[3]}\n"
        )
        out.append(s)
        size += len(s)
    return "".join(out).encode()[:n]


def binary(rng, n):
    return rng.randbytes(n)


def db_pages(rng, n, version=0):
    """8 KiB pages: a header and semi-compressible records (half text, half random)."""
    pages = []
    for p in range((n + 8191) // 8192):
        head = f"PAGE{p:010d}v{version:06d}|".encode()
        body = prose(rng, 4096 - len(head)) + rng.randbytes(4096)
        pages.append(head + body)
    return b"".join(pages)[:n]


KINDS = [  # (weight, extension, generator)
    (30, ".txt", prose),
    (25, ".rs", code),
    (15, ".log", log),
    (15, ".bin", binary),
    (8, ".md", prose),
    (7, ".c", code),
]


def content_for(ext, rng, n):
    for _, e, gen in KINDS:
        if e == ext:
            return gen(rng, n)
    if ext == ".db":
        return db_pages(rng, n)
    if ext == ".img":
        return binary(rng, n)
    return prose(rng, n)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def generate(root, size_mb, files, seed):
    rng = random.Random(seed)
    total = int(size_mb * MB)
    if files is None:
        files = max(50, int(size_mb * 20))
    # A few large files take ~15% of the bytes.
    large = [
        ("data/store.db", ".db", 0.07),
        ("var/log/big.log", ".log", 0.04),
        ("images/disk.img", ".img", 0.04),
    ]
    written = 0
    count = 0
    for rel, ext, frac in large:
        n = int(total * frac)
        write(os.path.join(root, rel), content_for(ext, rng, n))
        written += n
        count += 1
    # The rest: many files with a heavy-tailed size distribution, scaled to the budget.
    n_small = max(1, files - len(large))
    raw = [rng.paretovariate(1.2) for _ in range(n_small)]
    scale = (total - written) / sum(raw)
    exts = rng.choices([k[1] for k in KINDS], weights=[k[0] for k in KINDS], k=n_small)
    ndirs = max(1, n_small // 40)
    for i in range(n_small):
        n = max(0, int(raw[i] * scale))
        d = i % ndirs
        sub = f"d{d // 20:03d}/s{d % 20:02d}"
        if d % 3 == 0:
            sub += f"/deep{d % 7}"
        rel = f"{sub}/f{i:06d}{exts[i]}"
        write(os.path.join(root, rel), content_for(exts[i], rng, n))
        written += n
        count += 1
    os.makedirs(os.path.join(root, "empty"), exist_ok=True)
    print(f"gen_tree: {root}: {count} files, {written / MB:.1f} MiB", file=sys.stderr)


def all_files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append((p, os.path.getsize(p)))
    out.sort()
    return out


def mutate(root, day, percent, seed):
    rng = random.Random(seed * 1_000_003 + day)
    files = all_files(root)
    if not files:
        sys.exit(f"gen_tree: {root}: no files to mutate")
    total = sum(s for _, s in files)
    budget = int(total * percent / 100)
    changed = 0

    # 40%: edits in place inside large files (same size, same inode).
    large = [(p, s) for p, s in files if s >= 1 * MB]
    target = changed + budget * 0.4
    while large and changed < target:
        p, s = rng.choice(large)
        n = min(rng.randint(4096, 64 * 1024), s, max(4096, int(target - changed)))
        off = rng.randrange(0, s - n + 1)
        ext = os.path.splitext(p)[1]
        data = content_for(ext, rng, n)
        with open(p, "r+b") as f:
            f.seek(off)
            f.write(data)
        changed += n

    # 20%: appends to logs.
    logs = [p for p, _ in files if p.endswith(".log")]
    target = changed + budget * 0.2
    while logs and changed < target:
        p = rng.choice(logs)
        n = min(rng.randint(1024, 64 * 1024), max(1024, int(target - changed)))
        with open(p, "ab") as f:
            f.write(log(rng, n, t0=1_790_000_000 + day * 86_400))
        changed += n

    # 20%: small and medium files rewritten (a new version of the whole file).
    smallish = [(p, s) for p, s in files if 0 < s < 1 * MB]
    target = changed + budget * 0.2
    while smallish and changed < target:
        p, s = rng.choice(smallish)
        if not os.path.exists(p):
            continue
        n = max(1, int(s * rng.uniform(0.8, 1.2)))
        write(p, content_for(os.path.splitext(p)[1], rng, n))
        changed += n

    # 20%: new files.
    target = changed + budget * 0.2
    i = 0
    while changed < target:
        ext = rng.choice([k[1] for k in KINDS])
        n = min(rng.randint(512, 256 * 1024), max(512, int(target - changed)))
        write(os.path.join(root, f"new/day{day:03d}/n{i:05d}{ext}"), content_for(ext, rng, n))
        changed += n
        i += 1

    # A few deletions (about P% of the small files, at least one).
    deleted = 0
    candidates = [p for p, s in smallish if os.path.exists(p)]
    for p in rng.sample(candidates, min(len(candidates), max(1, int(len(files) * percent / 100 / 5)))):
        os.remove(p)
        deleted += 1

    print(
        f"gen_tree: {root}: day {day}: {changed / MB:.2f} MiB changed "
        f"({100 * changed / max(1, total):.2f}% of {total / MB:.1f} MiB), "
        f"{i} new files, {deleted} deleted",
        file=sys.stderr,
    )


def small_files(root, n, seed):
    """n tiny unique files, 1000 per directory, written with raw os calls for speed."""
    per_dir = 1000
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for d in range((n + per_dir - 1) // per_dir):
        dpath = os.path.join(root, f"{d // 100:04d}", f"{d % 100:02d}")
        os.makedirs(dpath, exist_ok=True)
        for i in range(d * per_dir, min(n, (d + 1) * per_dir)):
            fd = os.open(os.path.join(dpath, f"f{i:07d}"), flags, 0o644)
            os.write(fd, b"small file %d seed %d\n" % (i, seed))
            os.close(fd)
    print(f"gen_tree: {root}: {n} small files", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--size-mb", type=float)
    ap.add_argument("--files", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mutate", type=int, metavar="DAY")
    ap.add_argument("--percent", type=float, default=1.0)
    ap.add_argument("--small-files", type=int, metavar="N")
    a = ap.parse_args()
    modes = sum(x is not None for x in (a.size_mb, a.mutate, a.small_files))
    if modes != 1:
        ap.error("give exactly one of --size-mb, --mutate, --small-files")
    build_vocab(a.seed)
    if a.mutate is not None:
        if not os.path.isdir(a.dir):
            ap.error(f"{a.dir}: not a directory")
        mutate(a.dir, a.mutate, a.percent, a.seed)
    elif a.small_files is not None:
        os.makedirs(a.dir, exist_ok=True)
        small_files(a.dir, a.small_files, a.seed)
    else:
        os.makedirs(a.dir, exist_ok=True)
        generate(a.dir, a.size_mb, a.files, a.seed)


if __name__ == "__main__":
    main()
