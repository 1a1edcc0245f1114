"""`remote`: run one stage where the run directory is not shared (the training pod).

Pulls the stage's inputs from the artifact store into the run directory, runs the stage's own CLI
(the same arguments the local runner uses, after `--`), and pushes its outputs back.

Usage:
    python -m dpo_tasks remote --pull-from gs://b/_staging/p/r/inputs --push-to gs://b/_staging/p/r/outputs \\
        --push train --push summaries/train.json -- train --persona P --run-dir /runs/p/r --set training.epochs=1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def make_parser(command: str = "remote") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pull-from", required=True, metavar="URI", help="copy everything under URI into the run dir first")
    parser.add_argument("--push-to", required=True, metavar="URI", help="where the outputs go afterwards")
    parser.add_argument("--push", action="append", required=True, metavar="PATH", help="run-dir relative output to push (repeatable)")
    parser.add_argument("stage_argv", nargs=argparse.REMAINDER, help="-- STAGE ARGS...: the stage's CLI call")
    return parser


def _run_dir(stage_argv: list[str]) -> Path:
    for i, arg in enumerate(stage_argv):
        if arg == "--run-dir" and i + 1 < len(stage_argv):
            return Path(stage_argv[i + 1])
        if arg.startswith("--run-dir="):
            return Path(arg.split("=", 1)[1])
    raise SystemExit(f"remote: the stage call {stage_argv!r} has no --run-dir")


def main(args: argparse.Namespace) -> int:
    from dpo_tasks import cli
    from dpo_tasks.store.sync import pull, push

    stage_argv = args.stage_argv[1:] if args.stage_argv[:1] == ["--"] else args.stage_argv
    if not stage_argv:
        raise SystemExit("remote: no stage call after --")
    run_dir = _run_dir(stage_argv)
    n = pull(args.pull_from, run_dir)
    log.info("pulled %d input files from %s into %s", n, args.pull_from, run_dir)
    rc = cli.main(stage_argv)
    if rc != 0:
        log.error("%s exited with %d; nothing pushed", stage_argv[0], rc)
        return rc
    n = push(run_dir, args.push, args.push_to)
    log.info("pushed %d output files to %s", n, args.push_to)
    return 0
