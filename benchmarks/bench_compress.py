"""charlstm against general-purpose compressors on texts that are not prose.

For each text, built from what this machine has (nothing is copied into the project):

    code      CPython's standard library .py files, in name order, the first ~1 MB
    licences  /usr/share/common-licenses, concatenated
    cjk       CPython's Lib/test/cjkencodings/*-utf8.txt, then the ja/ko/zh man pages (roff), ~600 KB
    log       /var/log/dpkg.log (else alternatives.log, else a generated apt-style log)
    prose     tinyshakespeare.txt from the test data, the control

the text is split 90/10; ``charlstm train`` (``--size auto``, the defaults a user gets) trains on
the first 90% for each of ``--budgets`` seconds, and one ``charlstm eval --adapt --cache-size N
--context TRAIN`` scores the last 10%: static, dynamic evaluation, the neural cache and both, in
bits per byte, with the first 90% read first as context (never scored), as the compressors get
it: ``xz -9e`` and ``zstd --ultra -22``'s figure is size(compress(train + test)) -
size(compress(train)), in bits per byte of the test part. Then ``charlstm compress`` codes the
last 10% for real (static, and ``--adapt --cache-size N --context TRAIN``) and ``decompress``
gives it back: the files' bits per byte against ``eval``'s and against the anchors for "a model
of this kind of text" (``zstd --patch-from`` the first 90%, ``zstd -19 -D`` with a dictionary
``zstd --train`` made from it cut into 4 KB samples, ``brotli -q 11``, ``bzip2 -9``), each way's
KB/s, peak memory and the round trip. ``--big 10000000`` also round-trips a 10 MB file.
Static coding is measured twice side by side, with the default int8 products and ``--weights
fp32``, each against ``eval``'s static figure with the same ``--weights``. ``--static`` measures
only that (no dynamic evaluation or cache: minutes, not an hour); ``--reuse DIR`` takes the texts
and runs a ``--keep DIR`` left instead of building and training them.

    python3 benchmarks/bench_compress.py --budgets 300 --json compress.json --big 10000000  # 5 texts: ~50 min (2 cores)
    python3 benchmarks/bench_compress.py --budgets 300 --texts code,log
    python3 benchmarks/bench_compress.py --quick                    # seconds: tiny slices and models (the suite)
    python3 benchmarks/bench_compress.py --budgets 300 --static --reuse DIR   # static coding of kept runs: ~3 min
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import SHARED_DATA, charlstm, machine, print_table, write_json  # noqa: E402

TEXTS = ("code", "licences", "cjk", "log", "prose")
SIZES = {"code": 1_000_000, "licences": 1_000_000, "cjk": 600_000, "log": 1_000_000, "prose": 1_200_000}
QUICK_BYTES = 12_000
TINY = "--size fixed --embedding-dim 16 --hidden-size 32 --num-layers 1 --batch-size 4 --bptt 32 --max-steps 20".split()
CACHE_SIZE = 150_000  # about the training part's last 150 KB: the cache reaches back as far as xz's window does here


def _stdlib() -> Path:
    return Path(os.__file__).resolve().parent


def _cut(text: str, size: int) -> str:
    """The first ``size`` UTF-8 bytes of ``text``, never splitting a character."""
    return text.encode()[:size].decode("utf-8", "ignore")


def build_text(name: str, size: int) -> str | None:
    """The text ``name`` from this machine, at most ``size`` bytes; None when the machine lacks it."""
    parts: list[str] = []
    total = 0

    def add(text: str) -> bool:
        nonlocal total
        parts.append(text)
        total += len(text.encode())
        return total >= size

    if name == "code":
        for path in sorted(_stdlib().glob("*.py")):
            if add(path.read_text(encoding="utf-8", errors="replace")):
                break
    elif name == "licences":
        for path in sorted(Path("/usr/share/common-licenses").glob("*")):
            if path.is_file() and not path.is_symlink() and add(path.read_text(encoding="utf-8", errors="replace")):
                break
    elif name == "cjk":
        for path in sorted(glob.glob(str(_stdlib() / "test" / "cjkencodings" / "*-utf8.txt"))):
            add(Path(path).read_text(encoding="utf-8", errors="replace"))
        for language in ("ja", "ko", "zh_CN", "zh_TW"):
            for path in sorted(glob.glob(f"/usr/share/man/{language}/man*/*.gz")):
                try:
                    if add(gzip.decompress(Path(path).read_bytes()).decode("utf-8")):
                        break
                except (OSError, UnicodeDecodeError):
                    continue
            if total >= size:
                break
    elif name == "log":
        for path in ("/var/log/dpkg.log", "/var/log/alternatives.log"):
            if Path(path).is_file():
                add(Path(path).read_text(encoding="utf-8", errors="replace"))
                break
        if not parts:  # no log on this machine: one in dpkg's shape, from the installed packages
            import importlib.metadata as md

            names = sorted(d.metadata["Name"] or "?" for d in md.distributions())
            for i in range(100_000):
                package = names[i % len(names)]
                stamp = f"2024-{1 + i // 30000 % 12:02d}-{1 + i // 1000 % 28:02d} {i // 60 % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}"
                if add(f"{stamp} status {'half-installed unpacked installed'.split()[i % 3]} {package}:amd64 {i % 7}.{i % 13}\n"):
                    break
    elif name == "prose":
        path = SHARED_DATA / "tinyshakespeare.txt"
        if path.is_file():
            add(path.read_text(encoding="utf-8"))
    else:
        raise ValueError(name)
    if not parts:
        return None
    return _cut("".join(parts), size)


def split(text: str) -> tuple[str, str]:
    """The first 90% and the last 10% (by characters)."""
    cut = len(text) * 9 // 10
    return text[:cut], text[cut:]


def compressor_bits_per_byte(command: list[str], train: bytes, test: bytes) -> float | None:
    """Bits per test byte of ``command`` (stdin -> stdout) given ``train`` as context."""
    if shutil.which(command[0]) is None:
        return None

    def size(data: bytes) -> int:
        return len(subprocess.run(command, input=data, capture_output=True, check=True).stdout)

    return (size(train + test) - size(train)) * 8 / len(test)


def anchors(train_path: Path, test_path: Path, tmp: Path) -> dict[str, float | None]:
    """Bits per test byte of the "model of this kind of text" anchors: zstd patching from the first
    90%, zstd with a dictionary trained on it cut into 4 KB samples, brotli -q 11 (its built-in
    dictionary) and bzip2 -9 (neither given the first 90%)."""
    test = test_path.read_bytes()
    bits = {}

    def size_of(command: list[str]) -> int | None:
        if shutil.which(command[0]) is None:
            return None
        return len(subprocess.run(command, capture_output=True, check=True).stdout)

    patched = size_of(["zstd", "--ultra", "-22", "-q", "-c", f"--patch-from={train_path}", str(test_path)])
    bits["zstd --patch-from"] = None if patched is None else patched * 8 / len(test)
    samples = tmp / f"{train_path.stem}.samples"
    samples.mkdir(exist_ok=True)
    train = train_path.read_bytes()
    for i in range(0, len(train), 4096):
        (samples / f"{i:09d}").write_bytes(train[i : i + 4096])
    dictionary = tmp / f"{train_path.stem}.zdict"
    bits["zstd -19 -D"] = None
    if shutil.which("zstd") is not None and len(train) >= 8 * 4096:
        subprocess.run(["zstd", "--train", "-q", *sorted(map(str, samples.iterdir())), "-o", str(dictionary)],
                       capture_output=True, check=True)
        bits["zstd -19 -D"] = size_of(["zstd", "-19", "-q", "-c", "-D", str(dictionary), str(test_path)]) * 8 / len(test)
    shutil.rmtree(samples)
    try:
        import brotli

        bits["brotli -q 11"] = len(brotli.compress(test, quality=11)) * 8 / len(test)
    except ImportError:
        bits["brotli -q 11"] = None
    bzipped = size_of(["bzip2", "-9", "-c", str(test_path)])
    bits["bzip2 -9"] = None if bzipped is None else bzipped * 8 / len(test)
    return bits


def timed(args: list, log: list[str]) -> tuple[float, int, str]:
    """Run ``charlstm ARGS`` in a child process: (seconds, peak memory in MB, stderr's last line)."""
    import shlex

    log.append("charlstm " + " ".join(shlex.quote(str(a)) for a in args))
    with tempfile.NamedTemporaryFile("r") as report:
        done = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", report.name, sys.executable, "-m", "charlstm",
                               *map(str, args)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"charlstm {' '.join(map(str, args))}: {done.stderr.strip()[-500:]}")
        seconds, kilobytes = report.read().split()
    return float(seconds), int(kilobytes) // 1024, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def compress_row(run_dir: Path, test_path: Path, options: list, tmp: Path, log: list[str]) -> dict:
    """``charlstm compress`` then ``decompress`` of the test part with ``options``: the file's
    bits per byte, each way's seconds (the whole command: loading the model included) and KB/s
    (the coding alone, as the command reports it), peak memory, and whether the bytes came back."""
    packed, unpacked = tmp / f"{test_path.stem}.clstm", tmp / f"{test_path.stem}.back"
    context = [o for i, o in enumerate(options) if i and options[i - 1] == "--context"]
    c_seconds, c_mb, c_line = timed(["compress", run_dir, test_path, "--out", packed, "--force", *options], log)
    d_seconds, d_mb, d_line = timed(
        ["decompress", run_dir, packed, "--out", unpacked, "--force", *(["--context", *context] if context else [])], log)
    size = test_path.stat().st_size

    def rate(line: str, seconds: float) -> float:
        """KB/s of the coding alone as the command reports it, else of the whole command."""
        match = re.search(r"\(([0-9.,]+) KB/s\)", line)
        return float(match[1].replace(",", "")) if match else round(size / 1000 / max(seconds, 1e-3), 1)

    row = {"bits_per_byte": packed.stat().st_size * 8 / size, "compress_s": c_seconds, "decompress_s": d_seconds,
           "compress_kb_s": rate(c_line, c_seconds), "decompress_kb_s": rate(d_line, d_seconds),
           "peak_mb": max(c_mb, d_mb), "round_trip": unpacked.read_bytes() == test_path.read_bytes()}
    packed.unlink()
    unpacked.unlink()
    return row


def static_rows(run_dir: Path, test_path: Path, tmp: Path, log: list[str]) -> dict:
    """Static coding with each ``--weights`` (the default, int8, and fp32), each beside ``eval``'s
    static figure with the same weights."""
    rows = {}
    for weights in ("int8", "fp32"):
        report = json.loads(charlstm(["eval", run_dir, test_path, "--json", "--device", "cpu", "--weights", weights], log))
        options = [] if weights == "int8" else ["--weights", weights]
        rows[weights] = {"eval": report["bits_per_byte"], **compress_row(run_dir, test_path, options, tmp, log)}
    return rows


def _texts(name: str, quick: bool, tmp: Path, reuse: bool, compressors: bool = True) -> tuple[Path, Path, dict] | None:
    """The text's two parts on disk (made, or as ``--keep`` left them) and, with ``compressors``,
    the other compressors' figures."""
    train_path, test_path = tmp / f"{name}.train.txt", tmp / f"{name}.test.txt"
    if not (reuse and train_path.exists() and test_path.exists()):
        text = build_text(name, QUICK_BYTES if quick else SIZES[name])
        if text is None:
            return None
        train, test = split(text)
        train_path.write_text(train, encoding="utf-8")
        test_path.write_text(test, encoding="utf-8")
    train_bytes, test_bytes = train_path.read_bytes(), test_path.read_bytes()
    row = {"text": name, "bytes": len(train_bytes) + len(test_bytes), "test_bytes": len(test_bytes), "runs": []}
    if compressors:
        row.update({
            "xz -9e": compressor_bits_per_byte(["xz", "-9e", "-c"], train_bytes, test_bytes),
            "zstd --ultra -22": compressor_bits_per_byte(["zstd", "--ultra", "-22", "-c", "-q"], train_bytes, test_bytes),
            **anchors(train_path, test_path, tmp),
        })
    return train_path, test_path, row


def run(texts: list[str], budgets: list[float], quick: bool, tmp: Path, cache_size: int = CACHE_SIZE,
        static: bool = False, reuse: bool = False) -> dict:
    log: list[str] = []
    results = []
    for name in texts:
        made = _texts(name, quick, tmp, reuse, compressors=not static)
        if made is None:
            print(f"{name}: not on this machine; skipped", file=sys.stderr)
            continue
        train_path, test_path, row = made
        for budget in budgets:
            out = tmp / f"{name}-{budget:g}"
            shape = TINY if quick else ["--size", "auto"]
            trained = None
            if not (reuse and out.exists()):
                started = time.perf_counter()
                charlstm(["train", train_path, "--out", out, "--max-time", budget, *shape, "--no-samples",
                          "--device", "cpu"], log)
                trained = round(time.perf_counter() - started, 1)
            record = {"budget_s": budget, "train_s": trained, "compress_static": static_rows(out, test_path, tmp, log)}
            if not static:
                started = time.perf_counter()
                report = json.loads(
                    charlstm(
                        ["eval", out, test_path, "--adapt", "--cache-size", cache_size, "--context", train_path, "--json",
                         "--device", "cpu"],
                        log,
                    )
                )
                adapted = report["adapted"]
                record.update({
                    "eval_s": round(time.perf_counter() - started, 1),
                    "static": report["bits_per_byte"],
                    "adapt": adapted["bits_per_byte"],
                    "cache": report["cached"]["bits_per_byte"],
                    "adapt + cache": adapted["cached"]["bits_per_byte"],
                    "cache_theta": report["cached"]["cache_theta"],
                    "cache_lambda": report["cached"]["cache_lambda"],
                    "adapt_method": adapted["adapt_method"],
                    "cache_size": cache_size,
                    "context_tokens": report["context_tokens"],
                    "compress": {
                        "static": record["compress_static"]["int8"],
                        "adapt + cache": compress_row(
                            out, test_path, ["--adapt", "--cache-size", cache_size, "--context", train_path], tmp, log),
                    },
                })
            row["runs"].append(record)
        results.append(row)
    return {"results": results, "commands": log}


def table_rows(results: list[dict]) -> list[tuple[str, ...]]:
    def f(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = []
    for row in results:
        for r in row["runs"]:
            best = min(r["static"], r["adapt"], r["cache"], r["adapt + cache"])
            xz = row["xz -9e"]
            rows.append(
                (
                    row["text"], f"{row['bytes'] // 1000} KB", "reused" if r["train_s"] is None else f"{r['train_s']:.0f} of {r['budget_s']:g}", f(r["static"]), f(r["adapt"]),
                    f(r["cache"]), f(r["adapt + cache"]), f(xz), f(row["zstd --ultra -22"]),
                    "-" if xz is None else ("yes" if best < xz else "no"),
                )
            )
    return rows


def static_table(results: list[dict]) -> list[tuple[str, ...]]:
    """One row per text, budget and --weights: the static file against eval's static figure."""
    rows = []
    for row in results:
        for r in row["runs"]:
            for weights, c in r["compress_static"].items():
                rows.append((
                    row["text"], weights + (" (default)" if weights == "int8" else ""), f"{c['eval']:.4f}",
                    f"{c['bits_per_byte']:.4f}", f"{(c['bits_per_byte'] / c['eval'] - 1) * 100:+.2f}%",
                    f"{c['compress_kb_s']:.0f} / {c['decompress_kb_s']:.0f}", str(c["peak_mb"]),
                    "yes" if c["round_trip"] else "NO",
                ))
    return rows


def compress_rows(results: list[dict]) -> list[tuple[str, ...]]:
    """One row per text and budget: charlstm compress's files against eval's figure and the anchors."""
    def f(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = []
    for row in results:
        for r in row["runs"]:
            static, both = r["compress"]["static"], r["compress"]["adapt + cache"]
            others = [row[k] for k in ("xz -9e", "zstd --patch-from", "zstd -19 -D", "brotli -q 11", "bzip2 -9") if row.get(k)]
            rows.append((
                row["text"], f(static["bits_per_byte"]), f(both["bits_per_byte"]), f(r["adapt + cache"]),
                f"{(both['bits_per_byte'] / r['adapt + cache'] - 1) * 100:+.1f}%", f(row["xz -9e"]),
                f(row.get("zstd --patch-from")), f(row.get("zstd -19 -D")), f(row.get("brotli -q 11")), f(row.get("bzip2 -9")),
                "yes" if others and both["bits_per_byte"] < min(others) else "no",
                f"{static['compress_kb_s']:.0f} / {static['decompress_kb_s']:.0f}",
                f"{both['compress_kb_s']:.1f} / {both['decompress_kb_s']:.1f}",
                str(max(static["peak_mb"], both["peak_mb"])),
                "yes" if static["round_trip"] and both["round_trip"] else "NO",
            ))
    return rows


def big_round_trip(run_dir: Path, tmp: Path, size: int, log: list[str]) -> dict | None:
    """A ``size``-byte file (the complete Shakespeare repeated) compressed and decompressed with
    the prose run, static: seconds, KB/s, peak memory and whether it came back."""
    source = SHARED_DATA / "shakespeare_complete.txt"
    if not source.is_file():
        return None
    data = source.read_bytes()
    big = tmp / "big.txt"
    big.write_bytes((data * (size // len(data) + 1))[:size])
    row = compress_row(run_dir, big, [], tmp, log)
    big.unlink()
    return {"bytes": size, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="120,300", help="Training seconds, comma-separated [120,300].")
    parser.add_argument("--texts", default=",".join(TEXTS), help=f"Which texts [{','.join(TEXTS)}].")
    parser.add_argument("--quick", action="store_true", help="Seconds: 12 KB slices, tiny models, 20 steps.")
    parser.add_argument("--cache-size", type=int, default=CACHE_SIZE, help=f"eval's --cache-size [{CACHE_SIZE}].")
    parser.add_argument("--json", metavar="FILE", help="Also write the results as JSON.")
    parser.add_argument("--big", type=int, default=0, metavar="BYTES",
                        help="Also round-trip a file of BYTES (e.g. 10000000) with the prose run [0: no].")
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="Keep the texts and trained runs in DIR (benchmarks/bench_cache.py reads them).")
    parser.add_argument("--reuse", metavar="DIR", type=Path,
                        help="Take the texts and runs a --keep DIR left (no building, no training) and keep them there.")
    parser.add_argument("--static", action="store_true",
                        help="Only static coding, int8 and fp32, against eval's static figures (minutes).")
    args = parser.parse_args()
    if args.reuse is not None and args.keep is not None:
        parser.error("--reuse DIR keeps what it uses: give --reuse or --keep, not both")
    texts = [t.strip() for t in args.texts.split(",") if t.strip()]
    unknown = [t for t in texts if t not in TEXTS]
    if unknown:
        parser.error(f"--texts: unknown {', '.join(unknown)} (choose from {', '.join(TEXTS)})")
    budgets = [float(b) for b in args.budgets.split(",")] if not args.quick else [1.0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="charlstm-compress-") as scratch:
        tmp = args.reuse or args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        data = run(texts, budgets, args.quick, tmp, 200 if args.quick else args.cache_size, args.static,
                   args.reuse is not None)
        if args.big and "prose" in texts:
            data["big"] = big_round_trip(tmp / f"prose-{budgets[-1]:g}", tmp, args.big, data["commands"])
    header = ("text", "--weights", "eval static", "compress", "file vs eval", "KB/s (c / d)", "peak MB", "round trip")
    print_table("static coding, int8 (the default) and fp32, on the last 10%", static_table(data["results"]), header)
    if args.static:
        data.update(machine=machine(), quick=args.quick, budgets=budgets, seconds=round(time.perf_counter() - started, 1))
        write_json(args.json, data)
        return
    header = ("text", "size", "trained s", "static", "adapt", "cache", "both", "xz -9e", "zstd -22", "beats xz")
    print_table("bits per byte on the last 10% (lower is better)", table_rows(data["results"]), header)
    header = ("text", "compress", "--adapt --cache-size --context", "eval (both)", "file vs eval", "xz -9e",
              "zstd --patch-from", "zstd -19 -D", "brotli -q 11", "bzip2 -9", "smallest", "KB/s static (c / d)",
              "KB/s both (c / d)", "peak MB", "round trip")
    print_table("charlstm compress: the file's bits per byte on the last 10%", compress_rows(data["results"]), header)
    if data.get("big"):
        big = data["big"]
        print(f"{big['bytes']:,} bytes: {big['bits_per_byte']:.3f} bits per byte, compress {big['compress_s']:.0f} s "
              f"({big['compress_kb_s']} KB/s coding), decompress {big['decompress_s']:.0f} s, peak {big['peak_mb']} MB, "
              f"round trip {'yes' if big['round_trip'] else 'NO'}")
    data.update(machine=machine(), quick=args.quick, budgets=budgets, seconds=round(time.perf_counter() - started, 1))
    write_json(args.json, data)


if __name__ == "__main__":
    main()
