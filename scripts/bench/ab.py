"""A/B: one scenario served by the code of a git revision (A) and of the working tree (B),
round by round, alternating arms on the same machine, and the table that compares them."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench.report import render_ab
from bench.settings import RESULTS, ROOT

# Options of the A/B run that its rounds do not take.
AB_ONLY = ("ab", "rounds", "round_json", "b_webhook")


@contextmanager
def worktree(rev: str, path: Path) -> Iterator[Path]:
    """A detached `git worktree` of `rev` at `path`, removed afterwards."""
    git = ["git", "-C", str(ROOT), "worktree"]
    added = subprocess.run(
        [*git, "add", "--detach", "--quiet", str(path), rev], capture_output=True, text=True
    )
    if added.returncode != 0:
        raise RuntimeError(f"git worktree add {rev}: {added.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", str(path)], check=False)


def run_round(
    args: argparse.Namespace, root: Path, report_path: Path, *, webhook: str | None = None
) -> dict:
    """One round: `python -m bench` with `root`'s src first on PYTHONPATH, so that the
    bench's migrations, seeds, keys and gunicorn all import that tree's ticketboss (the bench
    itself is always the working tree's); its report."""
    options = {k: v for k, v in vars(args).items() if k not in AB_ONLY and v is not None}
    # A port the kernel picks: gunicorn binds with SO_REUSEPORT, so another bench that took
    # the same fixed port at the same time would silently share its connections with ours.
    options["port"] = 0
    if webhook is not None:
        options["webhook"] = webhook
    command = [sys.executable, "-m", "bench"]
    flags = {k: v for k, v in options.items() if not isinstance(v, bool)}
    command += [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    command += [f"--{k.replace('_', '-')}" for k, v in options.items() if v is True]
    command.append(f"--round-json={report_path}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(ROOT / "scripts")])}
    # In a session of its own, so that Ctrl-C reaches only us and the round's SIGTERM lets it
    # stop its gunicorn in order.
    child = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        returncode = child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
    # 1 is also an invariant that failed, which the report shows.
    if returncode not in (0, 1) or not report_path.exists():
        raise RuntimeError(f"the round of {root} failed with exit status {returncode}")
    report = json.loads(report_path.read_text())
    if not Path(report["service_code"]).is_relative_to(root / "src"):
        raise RuntimeError(f"the round of {root} was served from {report['service_code']}")
    return report


def run_ab(args: argparse.Namespace) -> int:
    """Alternate the arms, A first, for --rounds rounds each; print and write the table.
    0 if every round's invariants held, 1 otherwise."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    order = ["A", "B"] * args.rounds
    arms: dict[str, dict] = {}
    rounds = []
    with tempfile.TemporaryDirectory(prefix="ticketboss-ab-") as workdir:
        with worktree(args.ab, Path(workdir) / "a") as tree:
            roots = {"A": tree, "B": ROOT}
            for i, arm in enumerate(order):
                number = i // 2 + 1
                print(
                    f"== A/B round {number} of {args.rounds}: arm {arm}, {roots[arm]}", flush=True
                )
                webhook = None  # as --webhook says (its default: partner-0's endpoint)
                if args.b_webhook:  # B with that endpoint, A with none
                    webhook = args.b_webhook if arm == "B" else "none"
                report = run_round(
                    args, roots[arm], Path(workdir) / f"{arm}-{number}.json", webhook=webhook
                )
                name = args.ab if arm == "A" else "working tree"
                if args.b_webhook:
                    name += f" with --webhook {webhook}"
                arms[arm] = {
                    "label": f"{name} ({report['machine']['revision']})",
                    "code": report["service_code"],
                }
                rounds.append(
                    {
                        "arm": arm,
                        "round": number,
                        "ok": report["ok"],
                        "runs": report["runs"],
                        "webhook": report.get("webhook"),
                    }
                )
    ab = {
        "timestamp": stamp,
        "config": {
            "ab": args.ab,
            "scenario": args.scenario,
            "clients": args.clients,
            "duration_s": args.duration,
            "rounds": args.rounds,
        },
        "order": order,
        "arms": arms,
        "rounds": rounds,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ab-{stamp}.md").write_text(render_ab(ab))
    (RESULTS / f"ab-{stamp}.json").write_text(json.dumps(ab, indent=2, default=str) + "\n")
    print()
    print(render_ab(ab), end="")
    print(f"\nwrote {RESULTS}/ab-{stamp}.md, .json")
    return 0 if all(rd["ok"] for rd in rounds) else 1
