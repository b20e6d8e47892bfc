"""`protoscope …` — the command line.

Bad options and bad values exit with code 2 and a one-line message; a run that fails while
training exits with 1; nothing prints a traceback to the user.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from models.config import FIELD_PATHS, METHOD_FIELDS, TrainConfig, apply_fields, set_dotted
from protoscope.commands import command, dispatch, fail
from protoscope.sweep_cli import add_sweep

ProgressFn = Callable[[float, str], None]


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "config"
        parts.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(parts)


def _clusters(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(k) for k in text.split(",")]
    except ValueError as e:
        raise ValueError(f"--num-clusters {text!r}: expected e.g. 40,80,160") from e


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _add_train(sub: Any) -> None:
    p = command(
        sub,
        "train",
        "train SwAV, PCL or the supervised baseline",
        "Train a model; the run folder gets config.json, events.jsonl, checkpoints/.",
        _cmd_train,
    )
    p.add_argument("--method", choices=["swav", "pcl", "supervised"], default="swav")
    p.add_argument(
        "--recipe",
        choices=["cpu", "paper"],
        help="defaults to start from: cpu (tuned for minutes on a CPU, the default) or paper "
        "(the official code's hyper-parameters; README 'Deviations from the papers')",
    )
    p.add_argument(
        "--dataset",
        default="shapes",
        help="shapes | digits | cifar10 | stl10 | imagefolder (default: shapes)",
    )
    p.add_argument("--data-root", help="folder of cifar10 / stl10 / imagefolder data")
    p.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download cifar10/stl10 into --data-root",
    )
    p.add_argument("--image-size", type=int, help="resize images to this side (pixels)")
    p.add_argument("--num-train", type=int, help="use only this many training images")
    p.add_argument("--backbone", choices=["small_cnn", "resnet18", "resnet50"])
    p.add_argument("--width", type=int, help="base width of small_cnn")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", default=None, help="run folder (default: runs/<method>-<dataset>)")
    p.add_argument("--num-prototypes", type=int, help="SwAV: K")
    p.add_argument("--epsilon", type=float, help="SwAV: Sinkhorn ε")
    p.add_argument("--temperature", type=float, help="SwAV τ or PCL τ")
    p.add_argument("--queue-length", type=int, help="SwAV assignment queue / PCL negatives")
    p.add_argument(
        "--freeze-prototypes-iters", type=int, help="SwAV: iterations with frozen prototypes"
    )
    p.add_argument(
        "--no-equipartition",
        action="store_true",
        help="SwAV ablation: targets = softmax predictions, no Sinkhorn (collapses)",
    )
    p.add_argument("--num-clusters", help="PCL: comma-separated K list, e.g. 40,80,160")
    p.add_argument("--warmup-epochs", type=int, help="PCL: epochs of InfoNCE only")
    p.add_argument("--fixed-phi", action="store_true", help="PCL ablation: φ = τ for every cluster")
    p.add_argument("--max-minutes", type=float, help="stop after this much training time")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--amp",
        choices=["auto", "on", "off"],
        help="precision: auto (default) uses bf16/fp16 only where this machine runs it faster",
    )
    p.add_argument("--no-amp", action="store_true", help="train in float32 (= --amp off)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--config", help="JSON file with a full or partial TrainConfig")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set augment.num_small=4",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge --config, the named flags and --set overrides into one validated TrainConfig."""
    tree: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"--config {path}: no such file")
        try:
            tree = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path}: not valid JSON ({e})") from e
    # The flags are the named fields of POST /runs with dashes (models/config.FIELD_PATHS);
    # switches count only when given, so an unset one leaves the recipe's value.
    fields = {name: getattr(args, name, None) for name in (*FIELD_PATHS, *METHOD_FIELDS)}
    fields |= {
        "download": True if args.download else None,
        "fixed_phi": True if args.fixed_phi else None,
        "equipartition": False if args.no_equipartition else None,
        "amp": "off" if args.no_amp else args.amp,
        "num_clusters": _clusters(args.num_clusters),
    }
    apply_fields(tree, fields, args.method)
    if args.threads is not None:
        set_dotted(tree, "num_threads", args.threads)
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            set_dotted(tree, key.strip(), _parse_value(value))
        except ValueError as e:
            raise ValueError(f"--set {e}") from None
    return TrainConfig.model_validate(tree)


def _cmd_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from models.checkpoints import CheckpointError
    from models.data import DatasetError
    from models.train import Trainer, TrainingError, set_process_env_defaults

    try:
        cfg = config_from_args(args)
    except ValidationError as e:
        fail(parser, _validation_message(e))
    except ValueError as e:
        fail(parser, str(e))
    out = Path(args.out or f"runs/{cfg.method}-{cfg.data.name}")
    if args.resume:
        saved = out / "config.json"
        if not saved.is_file():
            fail(parser, f"--resume: {out} holds no run (no config.json)")
        cfg = TrainConfig.model_validate_json(saved.read_text())
    elif (out / "checkpoints" / "last.pt").exists():
        fail(parser, f"{out} already holds a run; pass --resume to continue it or pick --out")
    set_process_env_defaults()
    trainer = Trainer(cfg, out, resume=args.resume, progress=not args.quiet)
    try:
        end = trainer.run()
    except (DatasetError, CheckpointError) as e:
        fail(parser, str(e))
    except TrainingError as e:
        print(f"protoscope train: failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("protoscope train: interrupted; resume with --resume", file=sys.stderr)
        return 130
    if trainer.dist.is_main:  # one summary line, not one per torchrun rank
        summary = {"out": str(out), **{k: end[k] for k in ("status", "step", "epoch")}}
        summary["precision"] = trainer.precision.dtype
        print(json.dumps(summary))
    return 0


def _add_diagnose(sub: Any) -> None:
    p = command(
        sub,
        "diagnose",
        "collapse diagnostics of a checkpoint on a data set split",
        "Measure prototype usage, assignment entropy, embedding health, prototype "
        "redundancy and label agreement of a checkpoint; print the report as JSON.",
        _cmd_diagnose,
    )
    p.add_argument("checkpoint", help="protoscope, official SwAV or official PCL checkpoint")
    p.add_argument("--pretty", action="store_true", help="a short human summary instead of JSON")
    _add_analysis_flags(p, "the checkpoint's own")


def _add_analysis_flags(p: argparse.ArgumentParser, default_data: str) -> None:
    """The images an analysis reads and how it runs (every analysis command takes them)."""
    p.add_argument("--dataset", help=f"data set to evaluate on (default: {default_data})")
    p.add_argument("--data-root", help="folder of cifar10 / stl10 / imagefolder data")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument(
        "--max-images", type=int, default=2000, help="evaluate the first N images (default 2000)"
    )
    p.add_argument(
        "--amp",
        choices=["auto", "on", "off"],
        default="auto",
        help="precision of the forward passes (auto: reduced only where it is faster here)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _analysis_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `_add_analysis_flags`, checked."""
    if args.max_images < 1:
        fail(parser, f"--max-images must be ≥ 1, got {args.max_images}")
    keys = ("dataset", "data_root", "split", "max_images", "amp")
    return {k: getattr(args, k) for k in keys}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def diagnose_summary(r: dict[str, Any]) -> str:
    """A few lines for people; the JSON report holds everything."""
    lines = [
        f"verdict: {r['verdict']} — {r['reason']}",
        f"checkpoint: {r['checkpoint']} ({r['method']}, epoch {r['epoch']}, step {r['step']}) "
        f"on {r['dataset']}/{r['split']}, {r['num_images']} images",
    ]
    if r.get("num_prototypes"):
        lines.append(
            f"prototypes: {r['active_prototypes']}/{r['num_prototypes']} active, usage entropy "
            f"{_num(r['usage_entropy'], '.2f')}·ln K, {_num(r['effective_clusters'], '.1f')} "
            f"effective clusters, max cosine {_num(r['max_prototype_cosine'])}, "
            f"{r['num_duplicate_pairs'] or 0} pairs > 0.99"
        )
        lines.append(
            f"assignment: mean H(p_i) {_num(r['assignment_entropy'])}, H(mean p) "
            f"{_num(r['mean_prediction_entropy'])}, MI {_num(r['mutual_information'])} nats "
            f"(ln K = {_num(r['ln_k'])})"
        )
    else:
        lines.append("prototypes: none (judged on the embedding only)")
    lines.append(
        f"embedding ({r['embedding_space']}, d = {r['embedding_dim']}): std "
        f"{_num(r['embedding_std'], '.4f')} vs 1/√d {_num(r['expected_std'], '.4f')}, "
        f"effective rank {_num(r['effective_rank'], '.1f')}"
    )
    if r.get("recent_loss_mean") is not None:
        lines.append(
            f"loss: last {r['num_recent_losses']} average {_num(r['recent_loss_mean'])} vs "
            f"ln K {_num(r['ln_k'])}{' — on the ln K line' if r['loss_on_ln_k_line'] else ''}"
        )
    for c in r.get("pcl_clusterings") or []:
        phi = c["phi"]
        lines.append(
            f"PCL K = {c['num_clusters']}: φ {min(phi):.3f}–{max(phi):.3f}, "
            f"Spearman(φ, size) {_num(c['spearman'], '.2f')}"
        )
    if r.get("knn_top1") is not None or r.get("nmi") is not None:
        lines.append(
            f"labels: kNN top-1 {_pct(r['knn_top1'])}, NMI {_num(r['nmi'])}, AMI "
            f"{_num(r['ami'])}, ARI {_num(r['ari'])}, cluster accuracy "
            f"{_pct(r['cluster_accuracy'])}, purity {_pct(r['cluster_purity'])}"
        )
    return "\n".join(lines)


class _StderrProgress:
    """Progress of an analysis on stderr: a bar on a terminal, else a line per step.

    Piped or logged, a line is written when the step changes and at most every 10 % or 10 s
    within one, so a log shows where a slow analysis is without a line per batch.
    """

    def __init__(self, name: str, quiet: bool) -> None:
        self.name = name
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.last: tuple[str, float, float] = ("", -1.0, 0.0)

    def __call__(self, fraction: float, message: str) -> None:
        if self.quiet:
            return
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=100, desc=self.name, unit="%", file=sys.stderr, leave=False)
            self.bar.set_postfix_str(message, refresh=False)
            self.bar.update(max(0.0, 100 * fraction - self.bar.n))
            return
        step = message.split(":")[0]
        now = time.monotonic()
        last_step, last_fraction, last_time = self.last
        if step == last_step and fraction - last_fraction < 0.1 and now - last_time < 10:
            return
        self.last = (step, fraction, now)
        print(f"{self.name}: {100 * fraction:3.0f} % {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_analysis(
    parser: argparse.ArgumentParser,
    name: str,
    compute: Callable[[ProgressFn | None], Any],
    quiet: bool = False,
) -> tuple[int, Any]:
    """Run an analysis with the CLI's error contract: (exit code, result).

    Bad checkpoints or data exit 2 with the message; a failure while computing is one line and
    exit 1; never a traceback. Progress goes to stderr (see _StderrProgress) unless `quiet`, so
    stdout holds the JSON alone.
    """
    from models.checkpoints import CheckpointError
    from models.data import DatasetError

    progress = _StderrProgress(name, quiet)
    try:
        return 0, compute(progress)
    except (CheckpointError, DatasetError) as e:
        progress.close()
        fail(parser, str(e))
    except KeyboardInterrupt:
        print(f"protoscope {name}: interrupted", file=sys.stderr)
        return 130, None
    except Exception as e:  # a failure while computing: one line, never a traceback
        print(f"protoscope {name}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1, None
    finally:
        progress.close()
    return 2, None  # not reached: _fail exits


def _cmd_diagnose(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from models.diagnostics import diagnose_checkpoint

    kwargs = _analysis_args(parser, args)
    code, report = _run_analysis(
        parser,
        "diagnose",
        lambda progress: diagnose_checkpoint(args.checkpoint, progress=progress, **kwargs),
        args.quiet,
    )
    if code:
        return code
    print(diagnose_summary(report) if args.pretty else json.dumps(report))
    return 0


def _add_compare(sub: Any) -> None:
    p = command(
        sub,
        "compare",
        "compare two checkpoints on the same images",
        "Cluster agreement (Hungarian matching), NMI, ARI, prototypes that gained or "
        "lost images, metric deltas and Procrustes-aligned maps; printed as JSON.",
        _cmd_compare,
    )
    p.add_argument("a", help="first checkpoint")
    p.add_argument("b", help="second checkpoint")
    p.add_argument("--with-maps", action="store_true", help="include both maps' points")
    _add_analysis_flags(p, "A's own")


def _cmd_compare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from models.compare import compare_checkpoints

    kwargs = _analysis_args(parser, args)
    for path in (args.a, args.b):
        if not Path(path).is_file():
            fail(parser, f"{path}: no such checkpoint file")
    code, result = _run_analysis(
        parser,
        "compare",
        lambda progress: compare_checkpoints(args.a, args.b, progress=progress, **kwargs),
        args.quiet,
    )
    if code:
        return code
    if not args.with_maps:
        result = {k: v for k, v in result.items() if k not in ("map_a", "map_b")}
    print(json.dumps(result))
    return 0


def _add_serve(sub: Any) -> None:
    p = command(
        sub,
        "serve",
        "run the HTTP backend (training jobs, event streams, analyses)",
        "Serve the protoscope API with uvicorn. Listening beyond 127.0.0.1 needs "
        "PROTOSCOPE_TOKEN; other settings come from PROTOSCOPE_* variables (backend/settings.py).",
        _cmd_serve,
    )
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument(
        "--data", type=Path, help="data folder (default: $PROTOSCOPE_DATA or ./protoscope-data)"
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request")


def _cmd_serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from backend.serve import serve

    return serve(args.host, args.port, args.data, args.log_level, args.access_log)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protoscope", description="A workbench for clustering-based contrastive learning."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_diagnose(sub)
    _add_compare(sub)
    _add_serve(sub)
    add_sweep(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
