"""Certify every torchvision classifier, one JSON line per model (the figures in docs/certify.md).

    python scripts/certify_every_classifier.py --engine fast --out fast.jsonl
    python scripts/certify_every_classifier.py --engine aihwkit --out aihwkit.jsonl --until 12:40
    python scripts/certify_every_classifier.py --summary fast.jsonl aihwkit.jsonl

The calls are those of tests/test_stages.py `test_every_torchvision_classifier_certifies`: convert with
random weights and 10 classes at 3x32x32 (or, where the model does not run at that size, its own size),
then certify (1 repeat, 1 s, 2 samples, agreement), and check that the certificate's simulated layers
and placement sha256 are config.json's. Models run in size order in a worker process (one import for
many models) that is watched: a model over --timeout seconds, or one that leaves the machine under
1.5 GiB of free memory, is stopped and recorded as such, and a fresh worker goes on with the next.
A rerun skips the models --out already holds. --until HH:MM (UTC) starts no model after that time.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

MIN_FREE = 1.5 * 2**30


def certify_one(name: str, engine: str, work: Path) -> dict:
    import analogai_deploy as ad
    from analogai_deploy.errors import UsageError

    out = work / name
    res: dict = {"name": name, "engine": engine}
    start = time.perf_counter()
    try:
        if (out / "config.json").exists():  # converted by an earlier pass (the other engine's)
            pkg = ad.load(out)
        else:
            shutil.rmtree(out, ignore_errors=True)
            try:
                pkg = ad.convert(name, output=out, num_classes=10, input_shape=[3, 32, 32])
            except UsageError as exc:  # fixed-size (ViT), or too deep for 32x32 (AlexNet, Inception)
                res["not_at_32"] = str(exc)[:200]
                shutil.rmtree(out, ignore_errors=True)
                pkg = ad.convert(name, output=out, num_classes=10)
        res["input"] = pkg.config["input"].get("shape")
        res["convert_s"] = round(time.perf_counter() - start, 1)
        t = time.perf_counter()
        cert = ad.certify(out, repeats=1, times="1s", limit=2, metric="agreement", write=False, engine=engine)
        res["certify_s"] = round(time.perf_counter() - t, 1)
        res["tiles"] = cert["conversion"]["tiles"]
        res["analog_layers"] = cert["conversion"]["analog_layers"]
        res["groups_max"] = max(e.groups for e in pkg.placement.analog)
        res["certified"] = (cert["placement"]["simulated"] == pkg.placement.names
                            and cert["placement"]["sha256"] == pkg.placement.sha256 and cert["engine"] == engine)
    except Exception as exc:  # recorded, the pass goes on
        res["certified"] = False
        res["error"] = f"{type(exc).__name__}: {exc}"[:600]
        res["trace"] = traceback.format_exc()[-1500:]
    res["seconds"] = round(time.perf_counter() - start, 1)
    if out.exists() and sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) > 500 * 2**20:
        shutil.rmtree(out)  # keep the disk free; a later pass converts it again
    return res


def worker(names: list[str], engine: str, work: Path) -> None:
    import psutil

    for name in names:
        print("START " + name, flush=True)
        print("RESULT " + json.dumps(certify_one(name, engine, work)), flush=True)
        if psutil.Process().memory_info().rss > 3 * 2**30:
            break  # freed memory is not given back to the system: a fresh worker goes on with the rest


def ordered_names() -> list[str]:
    """Every torchvision classifier, smallest first (parameter counts from torchvision's weight metadata)."""
    from torchvision.models import get_model_weights

    from analogai_deploy.sources import torchvision_models

    def size(name: str) -> int:
        try:
            return list(get_model_weights(name))[0].meta["num_params"]
        except Exception:
            return 1 << 40
    return sorted(torchvision_models.names(), key=size)


def run(args) -> None:
    import psutil

    out = Path(args.out)

    def done() -> set[str]:
        return {json.loads(line)["name"] for line in out.read_text().splitlines() if line.strip()} \
            if out.exists() else set()

    def record(res: dict) -> None:
        with out.open("a") as f:
            f.write(json.dumps(res) + "\n")
        print(f"{res['name']:24s} {'certified' if res.get('certified') else 'NOT certified'} "
              f"{res.get('wall_s')} s {res.get('error', '')[:120]}", flush=True)

    names = args.names.split(",") if args.names else ordered_names()
    late = lambda: args.until and time.strftime("%H:%M", time.gmtime()) >= args.until  # noqa: E731
    while not late():
        todo = [n for n in names if n not in done()]
        if not todo:
            break
        p = subprocess.Popen([sys.executable, __file__, "--worker", ",".join(todo), "--engine", args.engine,
                              "--work", args.work], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in p.stdout], daemon=True).start()
        proc, current, start, peak, why = psutil.Process(p.pid), None, time.perf_counter(), 0, None
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = None
            if line and line.startswith("START "):
                current, start, peak = line[6:].strip(), time.perf_counter(), 0
                if late():
                    why = "until"
            elif line and line.startswith("RESULT "):
                res = json.loads(line[7:])
                res["peak_rss_gib"], res["wall_s"] = round(peak / 2**30, 2), round(time.perf_counter() - start, 1)
                record(res)
                current = None
            if p.poll() is not None and lines.empty():
                break
            try:
                peak = max(peak, proc.memory_info().rss)
            except psutil.Error:
                pass
            free = psutil.virtual_memory().available
            if current and free < MIN_FREE:  # a shared machine: never push other work into the OOM killer
                why = f"stopped: the machine had {free / 2**30:.1f} GiB free (this model's RSS {peak / 2**30:.1f} GiB)"
            elif current and time.perf_counter() - start > args.timeout:
                why = f"stopped: not finished in {args.timeout:.0f} s"
            if why:
                p.kill()
                p.wait()
                if current and why != "until":
                    record({"name": current, "engine": args.engine, "certified": False, "error": why,
                            "peak_rss_gib": round(peak / 2**30, 2), "wall_s": round(time.perf_counter() - start, 1)})
                break
        if why == "until":
            break


def summary(files: list[str]) -> None:
    rows: dict[str, dict[str, dict]] = {}
    for file in files:
        for line in Path(file).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows.setdefault(r["name"], {})[r["engine"]] = r
    engines = sorted({e for r in rows.values() for e in r})
    print("| model | input | tiles | " + " | ".join(f"{e} (s)" for e in engines) + " |")
    print("|---|---|---|" + "---|" * len(engines))
    for name, by in rows.items():
        any_r = next((r for r in by.values() if r.get("tiles")), next(iter(by.values())))
        size = any_r.get("input")
        cells = []
        for e in engines:
            r = by.get(e)
            cells.append("-" if r is None else f"{r.get('wall_s')}" if r.get("certified")
                         else f"not certified: {r.get('error', '?')[:80]}")
        print(f"| {name} | {'x'.join(map(str, size)) if size else '-'} | {any_r.get('tiles', '-')} | "
              + " | ".join(cells) + " |")
    for e in engines:
        n = sum(1 for by in rows.values() if by.get(e, {}).get("certified"))
        print(f"\n{e}: {n} of {len(rows)} certified, {sum(1 for by in rows.values() if e in by)} tried", end="")
    print(f"\neither engine: {sum(1 for by in rows.values() if any(r.get('certified') for r in by.values()))}"
          f" of {len(rows)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=["aihwkit", "fast"], default="fast")
    ap.add_argument("--out", help="JSON lines, appended to (a rerun skips what it holds)")
    ap.add_argument("--work", default="every_classifier", help="folder for the packages")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    ap.add_argument("--until", help="HH:MM UTC: start no model after it")
    ap.add_argument("--names", help="comma-separated models (default: all, smallest first)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--summary", nargs="+", metavar="JSONL", help="print the table of these result files")
    args = ap.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.worker:
        worker(args.worker.split(","), args.engine, Path(args.work))
    elif args.summary:
        summary(args.summary)
    elif args.out:
        run(args)
    else:
        ap.error("pass --out FILE (or --summary FILE ...)")


if __name__ == "__main__":
    main()
