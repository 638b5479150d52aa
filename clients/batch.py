"""Batch scoring: every JPEG/PNG of a folder (or a list file) through the served pipeline, into a results table.

    python -m clients.clo --batch frames/ --out results.csv          # ensemble_jpeg, N requests in flight
    python -m clients.clo --batch frames.txt --out results.parquet   # a list file: one path per line
    python -m clients.clo --batch frames/ --out results.jsonl --entry ensemble --shm   # same host only

N worker threads (`--concurrency`; default: what the server's queues take, read from its model
configs) each own one CloClient, so each request gets the client's retry on UNAVAILABLE. Every image
ends as one row of the table (clients/batch_table.py), written as it completes; a re-run skips the
paths already there (`--retry-errors`: except those with an error). An image that cannot be read, or
that the client or server refuses, becomes a row with an error, never a crash. Exit codes: 0 every
image scored; 1 some rows hold an error; 2 usage; 3 the run stopped early (no server, model missing):
run it again to resume; 130 interrupted (also resumable).
"""

from __future__ import annotations

import argparse
import io
import os
import queue
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tritonclient.utils import InferenceServerException

from clients.batch_summary import Annotator, Summary, artifacts
from clients.batch_table import FORMATS, ResultsTable, Row, TableError
from clients.clo import CloClient, Result
from clients.lib import cli, images, retry
from clients.lib.checks import ResponseError, check_vision_outputs
from clients.lib.errors import ClientError, ModelMissing, ServerUnreachable, translate
from tritonyard_contract import CROP, DETECTIONS, OIL_PCT

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
FALLBACK_CONCURRENCY = 4  # when the server does not show its model configs


class Stopped(ClientError):
    """The run cannot go on (no server, no model): nothing more is written; a re-run resumes."""

    exit_code = EXIT_STOPPED


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("batch scoring (python -m clients.clo --batch DIR --out results.csv)")
    g.add_argument("--batch", type=Path, metavar="SOURCE", help="a folder of images (recursive) or a list file")
    g.add_argument("--out", type=Path, help="results table: .csv, .jsonl or .parquet (resumed when it exists)")
    g.add_argument("--concurrency", type=int, help="requests in flight (default: what the server's queues take)")
    g.add_argument("--retry-errors", action="store_true", help="re-send the images whose row holds an error")
    g.add_argument("--annotate", type=Path, metavar="DIR", help="save annotated PNGs (boxes + crop) into DIR")
    g.add_argument("--annotate-first", type=int, default=10, metavar="K", help="--annotate: the first K (10)")
    g.add_argument("--annotate-below", type=float, metavar="PCT", help="--annotate: also every oil level below PCT")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (the summary is still printed)")


def usage(args: argparse.Namespace, check_files: bool = True) -> str | None:
    """What is wrong with the batch arguments, or None; `check_files` False: the source need not exist here
    (the Kubernetes Job's paths, checked by `make kserve-validate`)."""
    if args.out is None:
        return "--batch needs --out results.csv|.jsonl|.parquet"
    if args.out.suffix.lower() not in FORMATS:
        return f"--out {args.out}: the suffix must be one of {', '.join(FORMATS)}"
    if args.image is not None or args.synthetic or args.save or args.repeat != 1:
        return "--batch scores a folder or list: leave out the image, --synthetic, --save and --repeat"
    if check_files and not args.batch.exists():
        return f"--batch {args.batch}: no such folder or list file"
    if args.concurrency is not None and args.concurrency < 1:
        return "--concurrency must be at least 1"
    if args.annotate_first < 0:
        return "--annotate-first must be at least 0"
    return None


def list_inputs(source: Path, skip: set[Path] = frozenset()) -> list[str]:
    """The images to score: every file under a folder (hidden ones and `skip` left out), or a list file's lines
    (blank lines and # comments ignored; relative paths are relative to the list file's folder)."""
    if source.is_dir():
        found = []
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        skip = {p.resolve() for p in skip}
        return [p for p in found if Path(p).resolve() not in skip]
    paths = []
    for line in source.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            paths.append(line if os.path.isabs(line) else os.path.normpath(source.parent / line))
    return list(dict.fromkeys(paths))  # a path listed twice is scored once


def server_concurrency(client: CloClient, entry: str, headers: dict | None) -> tuple[int, str]:
    """Requests in flight the server takes without refusing or idling: over the entry's steps, the smallest
    of max_batch_size x instances (one full batch per instance) capped by the step's max_queue_size."""

    def config(name: str) -> dict:
        if client.protocol == "http":
            return client.client.get_model_config(name, headers=headers)
        found = client.client.get_model_config(name, headers=headers, as_json=True)
        return found.get("config", found)

    steps = [s["model_name"] for s in config(entry).get("ensemble_scheduling", {}).get("step", [])] or [entry]
    best, why = None, ""
    for step in dict.fromkeys(steps):
        cfg = config(step)
        batch = max(1, int(cfg.get("max_batch_size") or 1))
        instances = sum(int(g.get("count", 1)) for g in cfg.get("instance_group", [])) or 1
        policy = cfg.get("dynamic_batching", {}).get("default_queue_policy", {})
        queue_size = int(policy.get("max_queue_size") or 0)
        cap = min(batch * instances, queue_size) if queue_size else batch * instances
        if best is None or cap < best:
            why = f"{step}: max_batch_size {batch} x {instances} instance(s), queue {queue_size or 'unbounded'}"
            best = cap
    return best or FALLBACK_CONCURRENCY, why


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding; the contract's ImageError when there is none."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - let the contract say why, in the server's words
        images.decode(data)
        raise images.ImageError("not a decodable image") from None


@dataclass(frozen=True)
class Settings:
    url: str
    protocol: str
    entry: str
    shm: bool
    headers: dict | None
    retries: int
    timeout_s: float

    def client(self, shm: bool | None = None) -> CloClient:
        policy = retry.RetryPolicy(retries=self.retries)
        return CloClient(
            self.url, self.protocol, self.shm if shm is None else shm, self.headers, policy, self.timeout_s
        )


class Scorer:
    """One worker's client: scores one path at a time into a Row (and the Result, for annotation)."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.client = settings, settings.client()

    def score(self, path: str) -> tuple[Row, Result | None, bytes]:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return Row(path, error=f"cannot read the file: {exc.strerror or exc}"), None, b""
        size: tuple = (None, None)
        try:
            if self.settings.entry == "ensemble":
                image = images.decode(data)
                size = image.size
                result = self.client.infer_frame(images.to_frame(image), size)
            else:
                size = header_size(data)
                result = self.client.infer_encoded(data, size)
            answer = {DETECTIONS.name: result.detections[None], CROP.name: result.crop[None]}
            check_vision_outputs(answer | {OIL_PCT.name: np.array([[result.oil_pct]], np.float32)})
        except images.ImageError as exc:
            return Row(path, *size, error=_one_line(str(exc))), None, data
        except ResponseError as exc:
            return Row(path, *size, error=f"wrong answer: {exc}"), None, data
        except (InferenceServerException, ClientError, OSError) as exc:
            s = self.settings
            error = translate(exc, url=s.url, model=s.entry, retries=s.retries, timeout_s=s.timeout_s)
            if isinstance(error, (ServerUnreachable, ModelMissing)):
                raise Stopped(str(error)) from None
            return Row(path, *size, error=_one_line(str(error))), None, data
        return Row.scored(path, size, result.boxes, result.oil_pct, result.latency_s), result, data

    def close(self) -> None:
        self.client.close()


def _one_line(message: str) -> str:
    """An error for the table: Pillow names its in-memory file (`<_io.BytesIO object at 0x...>`); drop that."""
    return re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", message)


class _Run:
    """What the workers share: paths to take, rows to hand back, the stop flag and the first fatal error."""

    def __init__(self, paths: list[str], annotator: Annotator | None) -> None:
        self.todo: queue.Queue[str] = queue.Queue()
        for p in paths:
            self.todo.put(p)
        self.done: queue.Queue[Row] = queue.Queue()
        self.stop = threading.Event()
        self.fatal: BaseException | None = None
        self.annotator = annotator

    def work(self, settings: Settings) -> None:
        scorer = None
        try:
            scorer = Scorer(settings)  # in this thread: tritonclient's HTTP client is bound to it
            while not self.stop.is_set():
                try:
                    path = self.todo.get_nowait()
                except queue.Empty:
                    return
                row, result, data = scorer.score(path)
                if result is not None and self.annotator is not None:
                    self.annotator.maybe_save(row, result, data)
                self.done.put(row)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which stops the run
            self.fatal = self.fatal or exc
            self.stop.set()
        finally:
            if scorer is not None:
                scorer.close()


# tqdm's default, but always images/s (tqdm turns a rate under 1 into s/img)
BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    sink = sys.stderr if tty else _Lines(sys.stderr)  # logs (a Kubernetes Job): one line per update
    return tqdm(
        total=total, desc="scoring", unit="img", file=sink, disable=not enabled, mininterval=0.5 if tty else 10,
        ascii=not tty, ncols=None if tty else 100, dynamic_ncols=tty, smoothing=0.1, bar_format=BAR,
    )  # fmt: skip


class _Lines:
    """A file for tqdm that turns its carriage-return redraws into whole lines."""

    def __init__(self, out) -> None:
        self.out = out

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.out.write(text + "\n")

    def flush(self) -> None:
        self.out.flush()


def _score(run: _Run, settings: Settings, workers: int, table: ResultsTable, summary: Summary, bar) -> None:
    """Start the workers, append each row as it arrives, stop at the end, on a fatal error, or on Ctrl-C."""
    threads = [threading.Thread(target=run.work, args=(settings,), daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    try:
        while summary.scored < summary.todo:
            try:
                row = run.done.get(timeout=0.2)
            except queue.Empty:
                if run.fatal is not None or not any(t.is_alive() for t in threads):
                    break
                continue
            table.append(row)
            summary.add(row)
            bar.update(1)
            if not row.ok:
                bar.set_postfix(errors=summary.errors, refresh=False)
    finally:
        run.stop.set()
        bar.close()
        # Interrupted: a worker mid-request is left behind, unless it holds a shared-memory region to free.
        grace = settings.timeout_s + 5 if settings.shm else 5
        for t in threads:
            t.join(timeout=grace)
    if run.fatal is not None:
        raise run.fatal


def run_batch(args: argparse.Namespace, headers: dict | None) -> int:
    """`python -m clients.clo --batch ...`: score, write the table, print the summary; the exit code."""
    problem = usage(args)
    try:
        table = ResultsTable(args.out) if problem is None else None
        existing = table.load() if table else []
    except (TableError, OSError) as exc:
        problem = str(exc)
    if problem is not None:
        return cli.usage_error(problem)
    keep = [r for r in existing if r.ok] if args.retry_errors else None
    done = {r.path for r in (existing if keep is None else keep)}
    files = artifacts(args.out)
    paths = list_inputs(args.batch, {args.out, table.journal, *files.values()})
    entry = args.entry or ("ensemble" if args.shm else "ensemble_jpeg")
    url = cli.default_url(args.protocol, args.url)
    settings = Settings(url, args.protocol, entry, args.shm, headers, args.retries, args.timeout)
    summary = Summary(args.batch, args.out, entry, found=len(paths), skipped=sum(p in done for p in paths))
    todo = [p for p in paths if p not in done]
    summary.todo = len(todo)

    def body(target: cli.Target) -> int:
        try:
            workers, why = args.concurrency, "--concurrency" if args.concurrency else ""
            if workers is None and todo:
                probe = settings.client(shm=False)
                try:
                    workers, why = server_concurrency(probe, entry, headers)
                finally:
                    probe.close()
            summary.concurrency, summary.concurrency_source = min(workers or 1, len(todo)), why
            annotator = Annotator(args.annotate, args.annotate_first, args.annotate_below) if args.annotate else None
            table.open(keep)
            bar = _progress(len(todo), bool(todo) and not args.no_progress)
            summary.start = time.perf_counter()
            try:
                _score(_Run(todo, annotator), settings, summary.concurrency, table, summary, bar)
            finally:
                table.close()
        except (InferenceServerException, OSError) as exc:
            error = translate(exc, url=url, model=entry, retries=args.retries, timeout_s=args.timeout)
            raise Stopped(str(error)) from None
        finally:
            summary.finish(table.load() if table.path.exists() else [], files)
        return EXIT_FAILED if summary.errors_total else EXIT_OK

    previous = signal.signal(signal.SIGTERM, _interrupt)  # a Job's deadline or eviction: close the table first
    try:
        return cli.run(body, cli.Target(url, entry, args.retries, args.timeout))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
