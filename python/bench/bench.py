"""Benchmarks of the Python package beside diskcache and etl-pycache.

Every figure is measured in the same run, and reported as a ratio against
its baseline:

- 1 KB ``get`` hit p50 and 1 KB ``set`` p50, against ``diskcache`` and
  etl-pycache;
- ``set`` on a full cache with ``max_entries=10_000`` (each set evicts one),
  against etl-pycache;
- a 1 GB generator streamed in (``set``) and out (``get_stream``): peak RSS
  of the process and throughput, against the Rust API streaming the same
  chunks (``examples/stream_throughput.rs``).

    cargo build --workspace --release --all-features --example stream_throughput
    python python/bench/bench.py [--quick]

Needs ``diskcache`` and ``etl-pycache`` installed beside this package.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KB = os.urandom(1024)


def p50(samples: list[int]) -> float:
    """The median of nanosecond samples, in microseconds."""
    return statistics.median(samples) / 1000


def timed(fn, args_list) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for args in args_list:
        t0 = clock()
        fn(*args)
        out.append(clock() - t0)
    return out


def small_ops(root: Path, n: int) -> dict[str, dict[str, float]]:
    import diskcache
    from etl_pycache.local_cache import LocalDiskCache as SeedCache

    import etl_cache

    caches = {
        "etl_cache": etl_cache.LocalDiskCache(str(root / "ours")),
        "diskcache": diskcache.Cache(str(root / "diskcache")),
        "etl_pycache": SeedCache(str(root / "seed")),
    }
    results = {}
    for name, cache in caches.items():
        keys = [(f"key-{i}", KB) for i in range(n)]
        for k, v in keys[:50]:  # warm up: imports, directory creation
            cache.set(k, v)
        sets = timed(cache.set, keys)
        gets = timed(cache.get, [(k,) for k, _ in keys])
        assert cache.get("key-1") == KB
        results[name] = {"set_p50_us": p50(sets), "get_p50_us": p50(gets)}
    return results


def capped_sets(root: Path, n: int, cap: int = 10_000) -> dict[str, float]:
    from etl_pycache.local_cache import LocalDiskCache as SeedCache

    import etl_cache

    out = {}
    # Ours: filled through the capped cache itself.
    ours = etl_cache.LocalDiskCache(str(root / "ours-capped"), max_entries=cap)
    for i in range(cap):
        ours.set(f"fill-{i}", KB)
    out["etl_cache"] = p50(timed(ours.set, [(f"new-{i}", KB) for i in range(n)]))
    # The seed scans its directory on every capped set: fill it uncapped
    # (same files), then time sets on the full, capped cache.
    filler = SeedCache(str(root / "seed-capped"))
    for i in range(cap):
        filler.set(f"fill-{i}", KB)
    seed = SeedCache(str(root / "seed-capped"), max_entries=cap)
    out["etl_pycache"] = p50(timed(seed.set, [(f"new-{i}", KB) for i in range(n)]))
    return out


CHUNK = 64 * 1024


def stream_child(mode: str, root: str, size: int) -> None:
    """Runs in its own process, so its peak RSS is its own."""
    import etl_cache

    cache = etl_cache.LocalDiskCache(root)
    block = os.urandom(CHUNK)
    n = size // CHUNK
    if mode == "in":
        # An untimed round first, as the Rust baseline does: the first
        # gigabyte a process writes waits for the kernel to reclaim page cache.
        cache.set("gigabyte", (block for _ in range(n)))
        cache.delete("gigabyte")
    t0 = time.perf_counter()
    if mode == "in":
        cache.set("gigabyte", (block for _ in range(n)))
    else:
        total = 0
        for chunk in cache.get_stream("gigabyte", chunk_size=CHUNK):
            total += len(chunk)
        assert total == n * CHUNK, total
    secs = time.perf_counter() - t0
    hwm = next(
        int(line.split()[1]) * 1024
        for line in open("/proc/self/status")
        if line.startswith("VmHWM:")
    )
    print(json.dumps({"secs": secs, "peak_rss": hwm}))


def run_child(mode: str, root: Path, size: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--stream-child", mode, str(root), str(size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def rust_stream(example: str, root: Path, size: int) -> dict[str, float]:
    """The same stream through the Rust API (examples/stream_throughput.rs)."""
    out = subprocess.run(
        [example, str(root / "rust"), str(size), str(CHUNK)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    shutil.rmtree(root / "rust", ignore_errors=True)
    return json.loads(out)


def find_example(given: str | None) -> str | None:
    if given:
        return given
    repo = Path(__file__).resolve().parents[2]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or repo / "target")
    p = target / "release" / "examples" / "stream_throughput"
    return str(p) if p.is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples, 256 MB stream")
    ap.add_argument(
        "--rust",
        help="the stream_throughput example (the Rust baseline; default: the target directory's)",
    )
    ap.add_argument("--dir", help="scratch directory (default: a temporary one)")
    ap.add_argument("--stream-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stream_child:
        mode, root, size = a.stream_child
        stream_child(mode, root, int(size))
        return
    n = 500 if a.quick else 3000
    size = (256 << 20) if a.quick else (1 << 30)
    scratch = Path(tempfile.mkdtemp(prefix="etl-cache-bench-", dir=a.dir))
    try:
        small = small_ops(scratch / "small", n)
        capped = capped_sets(scratch / "capped", 50 if a.quick else 100)
        # The machine's writeback and neighbours move stream timings by
        # more than 2x from run to run: three interleaved rounds, the best
        # time of each side, the highest peak RSS.
        example = find_example(a.rust)
        ins, outs, rusts = [], [], []
        for _round in range(3):
            ins.append(run_child("in", scratch / "stream", size))
            outs.append(run_child("out", scratch / "stream", size))
            shutil.rmtree(scratch / "stream")
            if example:
                rusts.append(rust_stream(example, scratch, size))
        s_in = {"secs": min(r["secs"] for r in ins), "peak_rss": max(r["peak_rss"] for r in ins)}
        s_out = {"secs": min(r["secs"] for r in outs), "peak_rss": max(r["peak_rss"] for r in outs)}
        rust = (
            {k: min(r[k] for r in rusts) for k in ("in_secs", "out_secs")} if rusts else None
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    mb = size / 1e6
    ours, dc, seed = small["etl_cache"], small["diskcache"], small["etl_pycache"]
    rows = [
        ("1 KB get hit p50", f"{ours['get_p50_us']:.1f} µs", f"diskcache {dc['get_p50_us']:.1f} µs",
         ours["get_p50_us"] / dc["get_p50_us"], "≤ 1.0x"),
        ("1 KB get hit p50", f"{ours['get_p50_us']:.1f} µs", f"etl-pycache {seed['get_p50_us']:.1f} µs",
         ours["get_p50_us"] / seed["get_p50_us"], ""),
        ("1 KB set p50", f"{ours['set_p50_us']:.1f} µs", f"diskcache {dc['set_p50_us']:.1f} µs",
         ours["set_p50_us"] / dc["set_p50_us"], "≤ 0.5x"),
        ("1 KB set p50", f"{ours['set_p50_us']:.1f} µs", f"etl-pycache {seed['set_p50_us']:.1f} µs",
         ours["set_p50_us"] / seed["set_p50_us"], ""),
        ("set, full cache of 10,000 (p50)", f"{capped['etl_cache']:.1f} µs",
         f"etl-pycache {capped['etl_pycache'] / 1000:.1f} ms",
         capped["etl_cache"] / capped["etl_pycache"], "≤ 0.02x (50x faster)"),
    ]
    for label, key, peak_key in (("in", "in_secs", None), ("out", "out_secs", None)):
        res = s_in if label == "in" else s_out
        thr = mb / res["secs"]
        if rust:
            rthr = mb / rust[key]
            rows.append((f"{size >> 20} MB generator {label}: throughput", f"{thr:.0f} MB/s",
                         f"Rust API {rthr:.0f} MB/s", thr / rthr, "≥ 0.8x"))
        rows.append((f"{size >> 20} MB generator {label}: peak RSS", f"{res['peak_rss'] / 2**20:.0f} MiB",
                     "limit 64 MiB", res["peak_rss"] / (64 << 20), "≤ 1.0x"))
    print(f"| measure | etl_cache | baseline | ratio | target |")
    print(f"|---|---|---|---|---|")
    for label, ours_s, base_s, ratio, target in rows:
        print(f"| {label} | {ours_s} | {base_s} | {ratio:.3g}x | {target} |")


if __name__ == "__main__":
    main()
