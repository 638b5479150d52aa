"""Headless locust run against both pipelines (or one), with CSV output and a short summary.

Starts a tritonserver on the repository itself (on free ports) unless --url names a running one.

    python -m loadtests.loadtest                                  # both pipelines, 1 user each, 30 s
    python -m loadtests.loadtest --pipeline gpt2 --users 4 --run-time 1m --url 127.0.0.1:8000
    python -m loadtests.loadtest --entry both --image frame.jpg --out /tmp/run

Every answer is checked against a reference computed here first, in-process, from the committed weights
(loadtests/references.py; written to answers.json and handed to locust), or read from --answers: a wrong
answer is a failed request. Writes locust's CSV files (locust_stats.csv, locust_stats_history.csv,
locust_failures.csv, ...), locust_gpt2_users.csv (tokens/s per user), locust.log, answers.json and
summary.json into --out (default loadtests/results/locust/<timestamp>/). Exits 1 when any request failed
or a pipeline got none.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtests import locust_common as common
from loadtests import references
from serving.launcher import ServerError, TritonServer, free_ports

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtests" / "results"
LOCUSTFILES = {"vision": ROOT / "loadtests" / "locust_vision.py", "gpt2": ROOT / "loadtests" / "locust_gpt2.py"}
PIPELINE_TYPES = {"vision": common.INFER, "gpt2": common.STREAM}
CSV_PREFIX = "locust"
STOP_TIMEOUT_S = 60  # let requests in flight at the end finish and count, rather than vanish


def timestamped(kind: str) -> Path:
    """loadtests/results/<kind>/<YYYYmmdd-HHMMSS>/, created."""
    out = RESULTS / kind / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    return out


@dataclass(frozen=True)
class Endpoint:
    """Where the server answers, and its process when we started it."""

    http_url: str
    grpc_url: str
    server: TritonServer | None


@contextlib.contextmanager
def serve(
    url: str | None, grpc_url: str | None, repository: Path, out: Path, ports: tuple[int, int, int] = (0, 0, 0)
) -> Iterator[Endpoint]:
    """Use the server at `url`, or start one on `repository` (log in out/tritonserver.log) and stop it after."""
    if url:
        host = url.rpartition(":")[0]
        yield Endpoint(url, grpc_url or f"{host}:8001", None)
        return
    picked = iter(free_ports(3))
    http_port, grpc_port, metrics_port = (p or next(picked) for p in ports)
    log = out / "tritonserver.log"
    sys.stderr.write(f"starting tritonserver on {repository} (HTTP {http_port}, gRPC {grpc_port}); log: {log}\n")
    with TritonServer(repository, http_port, grpc_port, metrics_port, log_file=log, ready_timeout=600) as server:
        yield Endpoint(server.http_url, server.grpc_url, server)


def locust_command(
    pipelines: list[str], host: str, users: int, spawn_rate: float, run_time: str, prefix: Path, extra: list[str]
) -> list[str]:
    """`python -m locust` headless with CSV output; users are per pipeline (equal weights split them evenly)."""
    total = users * len(pipelines)
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        ",".join(str(LOCUSTFILES[p]) for p in pipelines),
        "--headless",
        "-u",
        str(total),
        "-r",
        str(spawn_rate * len(pipelines)),
        "-t",
        run_time,
        "--host",
        f"http://{host}",
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--only-summary",
        "--exit-code-on-error",
        "1",
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        *extra,
    ]


def start_locust(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start locust in the project root with its output in `log` (it exits 1 when any request failed)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    with log.open("w") as f:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def run_locust(cmd: list[str], log: Path) -> int:
    """Run locust to the end; its exit code. Interrupted (Ctrl-C), it stops locust too."""
    proc = start_locust(cmd, log)
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise


def verdict(summary: dict, pipelines: list[str], locust_rc: int) -> list[str]:
    """Reasons the run failed (empty when it passed)."""
    problems = []
    if summary["failures"]:
        problems.append(f"{summary['failures']} request(s) failed (see locust_failures.csv)")
    for p in pipelines:
        got = sum(r["requests"] for r in summary["rows"] if r["type"] == PIPELINE_TYPES[p])
        if not got:
            problems.append(f"the {p} pipeline completed no request")
    if locust_rc != 0 and not problems:
        problems.append(f"locust exited with code {locust_rc} (see locust.log)")
    return problems


def answers_file(pipelines: list[str], args: argparse.Namespace, out: Path) -> Path:
    """args.answers, or the reference answers of this run's frames and prompts computed now into out/answers.json."""
    if args.answers:
        return Path(args.answers)
    sys.stderr.write("computing the reference answers in-process from weights/ (loadtests/references.py)\n")
    answers: dict = {"what": "reference answers computed in-process from the committed weights"}
    if "vision" in pipelines:
        answers["vision"] = references.vision_answers(references.frame_sources(args.image, args.frames))
    if "gpt2" in pipelines:
        prompts = [args.prompt] if args.prompt else references.GPT2_PROMPTS
        answers["gpt2"] = references.gpt2_answers(prompts, args.max_tokens)
    path = out / "answers.json"
    path.write_text(json.dumps(answers, indent=2) + "\n")
    return path


def pipeline_args(pipelines: list[str], args: argparse.Namespace, answers: Path) -> list[str]:
    """The locustfiles' own options, for the pipelines loaded (locust refuses options no file declares)."""
    extra = ["--answers", str(answers)]
    if "vision" in pipelines:
        extra += ["--vision-entry", args.entry, "--vision-image", args.image, "--vision-frames", str(args.frames)]
    if "gpt2" in pipelines:
        extra += ["--gpt2-max-tokens", str(args.max_tokens)] + (["--gpt2-prompt", args.prompt] if args.prompt else [])
    return extra


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m loadtests.loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pipeline", choices=("both", "vision", "gpt2"), default=env("LOADTEST_PIPELINE", "both"))
    p.add_argument("--users", type=int, default=int(env("LOCUST_USERS", "1")), help="users per pipeline")
    p.add_argument("--spawn-rate", type=float, default=float(env("LOCUST_SPAWN_RATE", "1")), help="per pipeline")
    p.add_argument("--run-time", default=env("LOCUST_RUN_TIME", "30s"), help="e.g. 30s, 2m")
    p.add_argument("--url", default=env("TRITON_HTTP_URL"), help="HOST:PORT of a running server (HTTP)")
    p.add_argument(
        "--repository",
        type=Path,
        default=Path(env("MODEL_REPOSITORY", "model_repository")),
        help="served when no --url is given (built by `make build`)",
    )
    p.add_argument("--http-port", type=int, default=0, help="for the server started here (default: a free port)")
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--metrics-port", type=int, default=0)
    p.add_argument(
        "--entry",
        choices=("ensemble", "ensemble_jpeg", "both"),
        default=env("LOCUST_VISION_ENTRY", "ensemble_jpeg"),
        help="vision entry point",
    )
    p.add_argument("--image", default=env("LOCUST_VISION_IMAGE", "synthetic"), help='JPEG/PNG file or "synthetic"')
    p.add_argument("--frames", type=int, default=int(env("LOCUST_VISION_FRAMES", "1")), help="synthetic frames")
    p.add_argument("--max-tokens", type=int, default=int(env("LOCUST_GPT2_MAX_TOKENS", "16")))
    p.add_argument("--prompt", default=env("LOCUST_GPT2_PROMPT", ""), help="default: cycle built-in prompts")
    p.add_argument("--answers", help="reference answers JSON to check against (default: computed here from weights/)")
    p.add_argument("--out", type=Path, help="output folder (default loadtests/results/locust/<timestamp>/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.users < 1 or args.spawn_rate <= 0:
        sys.stderr.write("error: --users must be at least 1 and --spawn-rate above 0\n")
        return 2
    pipelines = ["vision", "gpt2"] if args.pipeline == "both" else [args.pipeline]
    out = args.out or timestamped("locust")
    out.mkdir(parents=True, exist_ok=True)
    extra = pipeline_args(pipelines, args, answers_file(pipelines, args, out))
    ports = (args.http_port, args.grpc_port, args.metrics_port)
    try:
        with serve(args.url, None, args.repository, out, ports) as ep:
            sys.stderr.write(
                f"locust: {args.users} user(s) per pipeline ({', '.join(pipelines)}) for {args.run_time} "
                f"against {ep.http_url}\n"
            )
            cmd = locust_command(
                pipelines, ep.http_url, args.users, args.spawn_rate, args.run_time, out / CSV_PREFIX, extra
            )
            rc = run_locust(cmd, out / "locust.log")
    except ServerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    stats = out / f"{CSV_PREFIX}_stats.csv"
    if not stats.is_file():
        log = (out / "locust.log").read_text()
        sys.stderr.write(f"error: locust wrote no {stats.name} (exit {rc}); its log:\n{log}")
        return 1
    users = common.read_users(out / f"{CSV_PREFIX}{common.USERS_CSV_SUFFIX}")
    summary = common.summarize(common.read_stats(stats), users)
    problems = verdict(summary, pipelines, rc)
    summary.update(
        pipelines=pipelines,
        users_per_pipeline=args.users,
        run_time=args.run_time,
        locust_exit_code=rc,
        passed=not problems,
        problems=problems,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(f"{common.format_summary(summary)}\nresults: {out}\n")
    if problems:
        sys.stderr.write("FAILED: " + "; ".join(problems) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
