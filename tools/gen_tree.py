#!/usr/bin/env python3
"""Generate a deterministic mixed file tree for reel's benchmarks and demo.

    gen_tree.py DIR --size-mb N [--files N] [--seed S]   create a tree of about N MB
    gen_tree.py DIR --mutate DAY --percent P [--seed S]  change about P% of its bytes
    gen_tree.py DIR --small-files N [--seed S]           create N tiny files, fast
    gen_tree.py DIR --many-files N --size-mb M [--dup-percent D] [--seed S]
                                                         create N files of M MiB in all, D% of
                                                         them duplicates (default 30), fast

The tree looks like a working volume: mostly text (prose, source code, logs; compressible),
some incompressible binary, a few large files (a page-structured database, a big log, a disk
image), and many small files, spread over nested directories. The same arguments always give
the same names and bytes (only the mtimes are the kernel's), so reel, restic and borg are
measured on identical data.

--mutate changes the tree the way a day of work does: edits in place inside large files, appends
to logs, rewritten small files, a few new and a few deleted files. The changed byte count is
about P% of the tree's size (printed at the end). Each DAY differs. It works on any tree,
the --many-files one included.

--many-files builds a tree shaped like a home or project volume with many small files: 50
top-level folders of 20 subfolders each (1,000 leaf folders, N/1000 files in each); file sizes
from a fixed spread (60% 100 B-4 KiB, 30% 4-16 KiB, 8.5% 16-64 KiB, 1.4% 64-256 KiB, 0.1%
256 KiB-4 MiB, log-uniform within each class, then all scaled so the tree has M MiB); D% of
the files are byte-for-byte copies of other files under other names and in other folders; the
content is text, source code and logs (compressible) and binary (random, incompressible), the
larger files more often binary. Each file's bytes come from its own seeded generator, so a
copy is regenerated rather than read back; about 1.7 GB takes well under a minute on one core.
(--size-mb 1659 gives 1.74 GB, MB = 10^6 bytes.)

Only the standard library is used.
"""

import argparse
import array
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


# Extensions of the --many-files tree that KINDS does not name, for --mutate on it.
EXTRA_KINDS = {
    ".html": prose,
    ".h": code,
    ".py": code,
    ".js": code,
    ".go": code,
    ".png": binary,
    ".jpg": binary,
    ".gz": binary,
    ".zip": binary,
    ".pdf": binary,
    ".mp3": binary,
    ".sqlite": db_pages,
}


def content_for(ext, rng, n):
    for _, e, gen in KINDS:
        if e == ext:
            return gen(rng, n)
    if ext == ".db":
        return db_pages(rng, n)
    if ext == ".img":
        return binary(rng, n)
    if ext in EXTRA_KINDS:
        return EXTRA_KINDS[ext](rng, n)
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


# --- many files ---------------------------------------------------------------------------------
#
# The generators above build text a line at a time with rng.choices: fine for the 300 MB tree,
# too slow for a couple of GB. These draw 16-bit indices into tables of 65,536 pieces (phrases
# of prose, lines of code, tails of log lines) with one randbytes call per batch, so the cost is
# a join, not a Python loop per word. The tables are built once per seed from the same
# vocabulary; the words' frequencies follow Zipf's law, so prose compresses about as real text
# does, and a file's content is its own random walk through them (no two files share a run of
# more than a few pieces, so nothing dedups across files but the deliberate copies).

PHRASES = None  # 65,536 bytes objects: 1-3 words and a separator
CODE_LINES = None  # 65,536 bytes objects: a line of code with its newline
LOG_TAILS = None  # 65,536 str: the end of a log line, after the time stamp and the id
TABLE_N = 65536


def build_fast_tables(seed):
    global PHRASES, CODE_LINES, LOG_TAILS
    rng = random.Random(seed * 7919 + 2)
    cum = []
    acc = 0.0
    for i in range(len(WORDS)):
        acc += 1.0 / (i + 1)
        cum.append(acc)
    zipf = rng.sample(WORDS, len(WORDS))  # which word is the most frequent: per seed
    seps = [" "] * 14 + [", ", ". ", ". ", ".\n", "\n"]
    phrases = []
    for _ in range(TABLE_N):
        ws = rng.choices(zipf, cum_weights=cum, k=rng.choice((1, 1, 2, 2, 3)))
        phrases.append((" ".join(ws) + rng.choice(seps)).encode())
    PHRASES = phrases
    CODE_LINES = [(line + "\n").encode() for line in rng.choices(CODE_POOL, k=TABLE_N)]
    levels = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
    tails = []
    for _ in range(TABLE_N):
        w = rng.choices(zipf, cum_weights=cum, k=4)
        tails.append(
            f"{rng.choice(levels)} worker-{rng.randint(0, 31)} {w[0]} {w[1]} "
            f"took={rng.randint(0, 5000)}ms {w[2]} {w[3]}\n"
        )
    LOG_TAILS = tails


def _indices(rng, k):
    a = array.array("H")
    a.frombytes(rng.randbytes(2 * k))
    return a


def fast_pieces(rng, n, table, avg):
    parts = []
    size = 0
    while size < n:
        s = b"".join(map(table.__getitem__, _indices(rng, (n - size) // avg + 8)))
        parts.append(s)
        size += len(s)
    return b"".join(parts)[:n]


def fast_prose(rng, n):
    return fast_pieces(rng, n, PHRASES, 10)


def fast_code(rng, n):
    return fast_pieces(rng, n, CODE_LINES, 36)


def fast_log(rng, n):
    t = 1_790_000_000 + rng.getrandbits(23)
    parts = []
    size = 0
    while size < n:
        k = (n - size) // 100 + 4
        idx = _indices(rng, k)
        step = rng.randbytes(k)
        ids = rng.randbytes(5 * k).hex()
        lines = []
        for i in range(k):
            b = step[i]
            t += b & 3
            lines.append(f"{t}.{(b * 7) % 1000:03d} id={ids[10 * i:10 * i + 10]} {LOG_TAILS[idx[i]]}")
        s = "".join(lines).encode()
        parts.append(s)
        size += len(s)
    return b"".join(parts)[:n]


def fast_db(rng, n):
    """8 KiB pages like db_pages: a header, half prose, half random."""
    pages = (n + 8191) // 8192
    text = fast_prose(rng, pages * 4096)
    rand = rng.randbytes(pages * 4096)
    out = []
    for p in range(pages):
        head = f"PAGE{p:010d}v000000|".encode()
        out.append(head + text[p * 4096 + len(head):(p + 1) * 4096] + rand[p * 4096:(p + 1) * 4096])
    return b"".join(out)[:n]


MANY_TOP, MANY_SUB = 50, 20  # 50 top-level folders x 20 subfolders = 1,000 leaf folders
# (share of the files, smallest, largest) before scaling to the size asked for
MANY_SIZES = [
    (0.600, 100, 4096),
    (0.300, 4096, 16384),
    (0.085, 16384, 65536),
    (0.014, 65536, 262144),
    (0.001, 262144, 4 * MB),
]
# per size class (< 16 KiB, < 256 KiB, larger): weights of prose, code, log, binary, db
MANY_KIND_WEIGHTS = [(30, 40, 5, 25, 0), (20, 25, 15, 35, 5), (5, 5, 20, 50, 20)]
MANY_KINDS = [
    (fast_prose, (".txt", ".md", ".html")),
    (fast_code, (".rs", ".c", ".h", ".py", ".js", ".go")),
    (fast_log, (".log",)),
    (binary, (".png", ".jpg", ".gz", ".zip", ".pdf", ".mp3")),
    (fast_db, (".db", ".sqlite")),
]


def many_files(root, n, size_mb, dup_percent, seed):
    rng = random.Random(seed * 104_729 + 3)
    total = int(size_mb * MB)
    n_dup = int(n * dup_percent / 100)
    n_uni = n - n_dup
    if n_uni < 1:
        sys.exit("gen_tree: --dup-percent leaves no original file")
    # Sizes of the originals, by class.
    cum = []
    acc = 0.0
    for share, _, _ in MANY_SIZES:
        acc += share
        cum.append(acc)
    sizes = []
    classes = rng.choices(range(len(MANY_SIZES)), cum_weights=cum, k=n_uni)
    for c in classes:
        _, lo, hi = MANY_SIZES[c]
        sizes.append(lo * (hi / lo) ** rng.random())
    # Each copy copies one original, any original equally likely (some get several copies).
    source = [rng.randrange(n_uni) for _ in range(n_dup)]
    scale = total / (sum(sizes) + sum(sizes[s] for s in source))
    sizes = [int(x * scale) for x in sizes]
    kinds = []
    exts = []
    for sz in sizes:
        w = MANY_KIND_WEIGHTS[0 if sz < 16384 else 1 if sz < 262144 else 2]
        k = rng.choices(range(len(MANY_KINDS)), weights=w)[0]
        kinds.append(k)
        exts.append(rng.choice(MANY_KINDS[k][1]))
    # Places: every leaf folder gets n/1000 files (the first n % 1000 one more), in random order.
    leaves = MANY_TOP * MANY_SUB
    slot = list(range(n))
    rng.shuffle(slot)
    leaf_of = [s % leaves for s in slot]
    stems = rng.choices(WORDS, k=n)
    names = [f"{stems[i]}_{i:06d}{exts[i]}" for i in range(n_uni)]
    for j in range(n_dup):
        i = n_uni + j
        src = source[j]
        # Half the copies keep the original's name (in another folder), the others get a new one.
        if leaf_of[i] != leaf_of[src] and rng.random() < 0.5:
            names.append(names[src])
        else:
            names.append(f"{stems[i]}_{i:06d}{exts[src]}")
    tops = rng.sample(WORDS, MANY_TOP)
    by_leaf = [[] for _ in range(leaves)]
    for i in range(n):
        by_leaf[leaf_of[i]].append(i)

    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    r = random.Random()
    written = 0
    dup_bytes = 0
    for leaf in range(leaves):
        top = leaf // MANY_SUB
        dpath = os.path.join(root, f"{tops[top]}{top:02d}", f"sub{leaf % MANY_SUB:02d}")
        os.makedirs(dpath, exist_ok=True)
        used = set()
        for i in by_leaf[leaf]:
            src = i if i < n_uni else source[i - n_uni]
            name = names[i]
            if name in used:  # two copies of one original with its name in the same folder
                name = f"{stems[i]}_{i:06d}{exts[src]}"
            used.add(name)
            r.seed((seed << 40) + 0x5EED + src)  # the original's bytes, for a copy too
            data = MANY_KINDS[kinds[src]][0](r, sizes[src])
            fd = os.open(os.path.join(dpath, name), flags, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            written += len(data)
            if i >= n_uni:
                dup_bytes += len(data)
    print(
        f"gen_tree: {root}: {n} files ({n_dup} copies of others, {dup_bytes / MB:.1f} MiB), "
        f"{written / MB:.1f} MiB ({written / 1e9:.2f} GB) in {leaves} folders",
        file=sys.stderr,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--size-mb", type=float)
    ap.add_argument("--files", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mutate", type=int, metavar="DAY")
    ap.add_argument("--percent", type=float, default=1.0)
    ap.add_argument("--small-files", type=int, metavar="N")
    ap.add_argument("--many-files", type=int, metavar="N")
    ap.add_argument("--dup-percent", type=float, default=30.0)
    a = ap.parse_args()
    if a.many_files is not None:
        if a.size_mb is None or a.mutate is not None or a.small_files is not None:
            ap.error("--many-files needs --size-mb and no other mode")
    else:
        modes = sum(x is not None for x in (a.size_mb, a.mutate, a.small_files))
        if modes != 1:
            ap.error("give exactly one of --size-mb, --mutate, --small-files, --many-files")
    if not 0 <= a.dup_percent < 100:
        ap.error("--dup-percent must be in [0, 100)")
    build_vocab(a.seed)
    if a.mutate is not None:
        if not os.path.isdir(a.dir):
            ap.error(f"{a.dir}: not a directory")
        mutate(a.dir, a.mutate, a.percent, a.seed)
    elif a.small_files is not None:
        os.makedirs(a.dir, exist_ok=True)
        small_files(a.dir, a.small_files, a.seed)
    elif a.many_files is not None:
        os.makedirs(a.dir, exist_ok=True)
        build_fast_tables(a.seed)
        many_files(a.dir, a.many_files, a.size_mb, a.dup_percent, a.seed)
    else:
        os.makedirs(a.dir, exist_ok=True)
        generate(a.dir, a.size_mb, a.files, a.seed)


if __name__ == "__main__":
    main()
