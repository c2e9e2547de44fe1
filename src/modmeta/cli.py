"""The ``modmeta`` command: train, evaluate, plot, list, and a demo that needs no data.

Errors are one line (``modmeta: error: ...``) with exit status 1; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import os
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from modmeta import config, distributed, phases, plot, registry, seeds, structures
from modmeta.evaluate import Evaluation, evaluate
from modmeta.train import Trainer, checkpoint, files, keep_freed_memory

EXAMPLES = {
    "train": """examples:
  modmeta train configs/sinusoid-maml.yaml --out runs/sinusoid-maml
  modmeta train configs/sinusoid-maml.yaml --out runs/try --set learner.inner_lr=0.02 --set train.iterations=5000
  modmeta train configs/sinusoid-maml.yaml --out runs/sinusoid-maml --resume   # after a stop or a kill
  modmeta train configs/sinusoid-maml.yaml --out runs/sinusoid-maml --device cpu
  modmeta train configs/omniglot-maml-5w1s.yaml --out runs/omniglot-maml --nproc 2   # the meta-batch over 2 processes
  torchrun --nnodes 2 --node-rank 0 --nproc-per-node 4 --master-addr HOST --master-port 29400 -m modmeta.cli train CONFIG --out DIR   # node-rank 1 on the other machine""",
    "eval": """examples:
  modmeta eval runs/sinusoid-maml
  modmeta eval runs/sinusoid-maml --episodes 600 --steps 10 --json
  modmeta eval runs/omniglot-maml --tasks my-letters.npz          # another data set: all its classes
  modmeta eval runs/omniglot-maml --tasks other.yaml --split val  # the tasks: section of a YAML file""",
    "plot": """examples:
  modmeta plot runs/sinusoid-maml     # writes runs/sinusoid-maml/learning_curves.png and adaptation.png
  modmeta plot runs/teacher-sigma-imaml   # a shrinkage learner's run adds sigma.png, σ per module""",
    "list": """examples:
  modmeta list
  modmeta list maml        # its arguments with their types and defaults
  modmeta list implicit    # a value a learner is composed from (learner.outer: {name: implicit, ...})""",
    "seeds": """examples:
  modmeta seeds configs/sinusoid-maml.yaml --out runs/maml-seeds --seeds 0 1 2 3 4 --set train.iterations=5000""",
    "phases": """examples:
  modmeta phases configs/forgetting-sinusoid-sums.yaml --out runs/forgetting""",
    "tune": """examples:
  modmeta tune configs/sinusoid-maml.yaml --trials 20 --store sqlite:///tune.db --iterations 300
  modmeta tune configs/sinusoid-fomaml.yaml --trials 20 --store sqlite:///tune.db --iterations 300 --warm-start 1""",
    "demo": """examples:
  modmeta demo                 # about two minutes on a laptop CPU
  modmeta demo --out /tmp/demo --iterations 2000""",
}


DEVICE_HELP = "auto (CUDA when there is one, else the CPU), cpu, cuda, cuda:1, mps"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``modmeta`` command with ``argv`` (default: the process's arguments)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    _own_malloc()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args)
    except KeyboardInterrupt:
        print("modmeta: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (every error becomes one line unless --debug)
        if getattr(args, "debug", False):
            traceback.print_exc()
        else:
            print(f"modmeta: error: {_one_line(e)}", file=sys.stderr)
        return 1


def _own_malloc() -> None:
    """The command's process keeps freed activations for reuse (:mod:`modmeta.train.memory`:
    7-10% less time per Conv4 meta-iteration in ``train``) unless ``MODMETA_MALLOC=system``."""
    if os.environ.get("MODMETA_MALLOC", "keep") != "system":
        keep_freed_memory()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's absent --debug must not undo `modmeta --debug COMMAND`.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    parser = argparse.ArgumentParser(
        prog="modmeta", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Meta-learning on PyTorch: train, evaluate and compare meta-learners.",
        epilog="examples:\n  modmeta demo\n  modmeta list\n  modmeta train configs/sinusoid-maml.yaml --out runs/maml\n"
               "  modmeta eval runs/maml --json\n\n`modmeta COMMAND --help` describes each command.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, parents=[common], help=help, description=help, epilog=EXAMPLES[name],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(run=run)
        return p

    p = command("train", _train, "meta-train a learner from a YAML config into a run folder")
    p.add_argument("config", help="the YAML config (see configs/)")
    p.add_argument("--out", required=True, help="run folder: config.yaml, metrics.jsonl, checkpoints")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. learner.inner_lr=0.01 (repeatable; VALUE is YAML)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint (exactly as if never stopped)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", help=f"device to train on (default: the config's device, auto): {DEVICE_HELP}")
    p.add_argument("--nproc", type=int, default=1,
                   help="split each meta-batch over this many processes on this machine (default 1; under "
                        "torchrun the processes are torchrun's)")

    p = command("eval", _eval, "evaluate a run's best checkpoint on the meta-test split, or on other tasks")
    p.add_argument("run_dir", metavar="DIR", help="a run folder written by `modmeta train`")
    p.add_argument("--episodes", type=int, help="test episodes (default: the config's eval.episodes)")
    p.add_argument("--steps", type=int, help="adaptation steps (default: the config's eval.steps)")
    p.add_argument("--seed", type=int, help="seed of the episodes (default: the config's eval.seed)")
    p.add_argument("--split", choices=["test", "val", "train"], help="split to evaluate on (default: test)")
    p.add_argument("--tasks", metavar="CONFIG_OR_NPZ",
                   help="evaluate on another task family: a YAML file with a tasks: section, or an .npz file of "
                        "labelled examples (x, y), used whole; ways, shots and queries default to the run's "
                        "(nothing is written into the run folder)")
    p.add_argument("--device", help=f"device to evaluate on (default: the run's): {DEVICE_HELP}")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    p = command("plot", _plot, "draw a run's learning curves and its metric against adaptation steps")
    p.add_argument("run_dir", metavar="DIR", help="a run folder written by `modmeta train`")

    p = command("list", _list, "list the learners, task families and models a config can name")
    p.add_argument("name", nargs="?", help="show this component's arguments, their types and defaults")

    p = command("seeds", _seeds, "train one config with several seeds, evaluate each, report the spread")
    p.add_argument("config", help="the YAML config (see configs/)")
    p.add_argument("--out", required=True, help="folder of the runs: OUT/seed-N for each seed, OUT/seeds.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="train.seed of each run (default 0-4)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("phases", _phases, "meta-train on the config's phases of task families in turn; report forgetting")
    p.add_argument("config", help="a YAML config with phases: [{name, tasks, iterations}, ...]")
    p.add_argument("--out", required=True, help="folder of the runs: OUT/1-NAME, OUT/2-NAME, ..., OUT/phases.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("tune", _tune, "search a learner's inner rate, inner steps and outer rate on the config's task family")
    p.add_argument("config", help="the YAML config (see configs/)")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold (a diverged run counts, pruned)")
    p.add_argument("--store", default="sqlite:///modmeta-tune.db",
                   help="Optuna storage URL of the experience store (default: sqlite:///modmeta-tune.db)")
    p.add_argument("--warm-start", type=int, default=0, metavar="K",
                   help="first try the best configurations of the K stored task families nearest by meta-features")
    p.add_argument("--name", help="the study's name in the store (default: the config file's name)")
    p.add_argument("--iterations", type=int, default=500, help="meta-training iterations of each trial (default 500)")
    p.add_argument("--episodes", type=int, default=100, help="validation episodes scoring each trial (default 100)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")

    p = command("demo", _demo, "meta-train MAML on sine regression and compare it with a pretrained baseline")
    p.add_argument("--out", default="runs/demo", help="where to write the runs and the plot (default: runs/demo)")
    p.add_argument("--iterations", type=int, default=10_000, help="meta-training iterations of each learner")
    p.add_argument("--episodes", type=int, default=600, help="test episodes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


# -- commands ----------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    cfg = config.load(args.config, [*args.set, *([f"device={args.device}"] if args.device else [])])
    if cfg.phases:
        raise ValueError(f"{args.config} has phases: train them in turn with `modmeta phases {args.config} --out DIR`")
    place = distributed.environment()
    if args.nproc != 1:
        if args.nproc < 1 or place is not None:
            raise ValueError(f"--nproc must be >= 1 and is for one machine without torchrun, got {args.nproc}"
                             f"{' under torchrun (its --nproc-per-node sets the processes)' if place else ''}")
        distributed.launch(_train_process, args.nproc, args)
        return 0
    if place is not None:
        return _train_distributed(args, cfg, place)
    return _train_here(args, cfg, config.build(cfg), in_group=False)


def _train_process(args: argparse.Namespace) -> None:
    """One process of ``train --nproc N`` (started by :func:`distributed.launch`)."""
    _own_malloc()
    args.nproc = 1
    _train(args)


def _train_distributed(args: argparse.Namespace, cfg: config.Config, place: distributed.Environment) -> int:
    """``train`` as one process of a distributed run: rank 0 holds the run folder, the others
    only compute; a GPU run uses GPU ``LOCAL_RANK``."""
    device = config.resolve_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", place.local_rank)
    with distributed.joined(device):
        run = config.build(cfg)
        run.learner.to(device)
        if place.rank == 0:
            return _train_here(args, cfg, run, in_group=True)
        config.trainer(run, args.out, progress=False, distributed=True).fit(cfg.train.iterations, resume=args.resume)
        return 0


def _train_here(args: argparse.Namespace, cfg: config.Config, run: config.Run, in_group: bool) -> int:
    """``train`` in this process: prepare the run folder, train, report (rank 0 of a distributed run)."""
    out = Path(args.out)
    with files.lock(out):
        files.claim(out, existing_run=args.resume and checkpoint.holds_run(out))
        if checkpoint.holds_run(out) and not args.resume:
            raise FileExistsError(f"{out} already holds a run: add --resume to continue it, or choose another --out")
        saved = out / "config.yaml"
        if args.resume and saved.exists():
            before = config.parse(config.read_yaml(saved.read_text()), source=str(saved))
            change = checkpoint.config_changes(before.to_dict(), run.config.to_dict())
            if change:
                raise ValueError(f"the config differs from the one the run in {out} started with ({change[0]}); "
                                 f"resume with the same config and --set values, or train into another --out")
        else:
            files.write_atomic(saved, yaml.safe_dump(run.config.to_dict(), sort_keys=False))
        trainer = config.trainer(run, out, progress=not args.quiet, distributed=in_group)
        return _fit(trainer, cfg, out, args.resume)


def _fit(trainer: Trainer, cfg: config.Config, out: Path, resume: bool) -> int:
    """Train to the config's iterations and print what came of it."""
    start = time.perf_counter()
    trainer.fit(cfg.train.iterations, resume=resume)
    done = f"trained {cfg.learner.name} to iteration {trainer.iteration} in {time.perf_counter() - start:.0f} s"
    if trainer.best is not None:
        b = trainer.best
        score = _number(b["metric"], b["mean"], b["ci95"])
        done += f"; best validation {b['metric']} {score} at iteration {b['iteration']}"
    print(f"{done}\nrun folder: {out}  (next: modmeta eval {out}; modmeta plot {out})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    run = config.restore(args.run_dir, device=args.device)
    if args.tasks is None:
        split = args.split or "test"
        family = config.evaluation_tasks(run).split(split)
    else:
        family = config.other_tasks(run, args.tasks, args.split)
        split = args.split or ("all" if Path(args.tasks).suffix == ".npz" else "test")
    defaults = run.config.eval
    result = evaluate(
        run.learner, family,
        episodes=args.episodes if args.episodes is not None else defaults.episodes,
        steps=args.steps if args.steps is not None else defaults.steps,
        seed=args.seed if args.seed is not None else defaults.seed,
    )
    record = {**result.to_dict(), "split": split, "checkpoint": str(run.checkpoint), "iteration": run.iteration}
    report = run.learner.report()
    modules = _component_match(run, report, family, result)
    if modules is not None:
        record["modules"] = modules.to_dict()
    record |= {k: v for k, v in report.items() if k in ("sigma", "inner_rates")}
    chosen = _best_step_on_validation(run, result, split) if args.tasks is None and len(result.curve) > 21 else None
    if chosen is not None:
        record["best_step"] = chosen
    if args.tasks is None:  # the run's own evaluation, which `modmeta plot` draws
        files.write_atomic(Path(args.run_dir) / "eval.json", json.dumps(record) + "\n")
    else:
        record["tasks"] = str(args.tasks)
    if args.json:
        print(json.dumps(record))
        return 0
    on = run.config.tasks.name if args.tasks is None else args.tasks
    print(f"{run.config.learner.name} on {on} ({split} split), "
          f"{run.checkpoint.name} at iteration {run.iteration}: {result}")
    last = len(result.curve) - 1
    width = max(2, len(str(last)))
    for k in _shown_steps(last):
        print(f"  after {k:>{width}} step{'s' if k != 1 else ' '}  {_number(result.metric, *result.curve[k])}")
    if chosen is not None:
        k = chosen["step"]
        print(f"  best    {_number(result.metric, *result.curve[k])} after {k} step{'s' if k != 1 else ''}, the step "
              f"chosen on {chosen['episodes']} validation episodes ({_number(result.metric, *chosen['val'])} there)")
    elif last > 20:
        print("  (no step is picked as the best: the run has no validation split, and a step chosen on these "
              "episodes would flatter the result)")
    if modules is not None:
        print(f"modules against the true components: {modules}")
    for text in _report_tables(report):
        print(text)
    return 0


def _best_step_on_validation(run: config.Run, result: Evaluation, split: str) -> dict[str, Any] | None:
    """The adaptation step of a long curve to report, chosen on validation episodes (never on
    the episodes being reported), with its validation score; ``None`` when the run's tasks have
    no validation split or the evaluation is of that split itself."""
    if split == "val":
        return None
    try:
        val = config.evaluation_tasks(run).split("val")
    except (KeyError, ValueError):
        return None
    episodes = min(run.config.train.val_episodes, result.episodes)
    curve = evaluate(run.learner, val, episodes=episodes, steps=len(result.curve) - 1, seed=run.config.train.val_seed).curve
    means = [mean for mean, _ in curve]
    best = (max if result.metric == "accuracy" else min)(range(len(means)), key=means.__getitem__)
    return {"step": best, "episodes": episodes, "val": list(curve[best]), split: list(result.curve[best])}


def _plot(args: argparse.Namespace) -> int:
    folder = Path(args.run_dir)
    records = plot.read_metrics(folder)
    saved = folder / "config.yaml"
    heading = plot.run_title(config.read_yaml(saved.read_text()) or {}) if saved.is_file() else folder.name
    written = []
    if any(r["split"] == "train" for r in records):
        written.append(plot.learning_curves({folder.name: records}, folder / "learning_curves.png", heading))
    else:
        print(f"no learning_curves.png: {folder}/metrics.jsonl holds no training step yet")
    if any("grad_norm" in r for r in records):
        written.append(plot.gradient_conflict({folder.name: records}, folder / "gradient_conflict.png", heading))
    evaluated = folder / "eval.json"
    curve = None
    if evaluated.is_file():
        e = json.loads(evaluated.read_text())
        curve, metric, title = e["curve"], e["metric"], f"{e['split']} split, {e['episodes']} episodes"
    else:
        val = [r for r in records if r["split"] == "val"]
        if val:
            metric = plot.metric_of(val)
            curve, title = val[-1]["curve"], f"validation at iteration {val[-1]['iteration']}"
        else:
            print(f"no validation records and no eval.json in {folder}: run `modmeta eval {folder}` "
                  f"to plot the metric against adaptation steps")
    if curve is not None and len(curve) < 2:
        print(f"no adaptation.png: the learner is scored without adaptation steps ({title}: "
              f"{_number(metric, *curve[0])})")
    elif curve is not None:
        written.append(plot.adaptation({folder.name: curve}, metric, folder / "adaptation.png",
                                       f"{heading}\n{metric} after k adaptation steps, {title}"))
    written += _report_figures(folder, heading)
    for path in written:
        print(f"wrote {path}")
    return 0


def _seeds(args: argparse.Namespace) -> int:
    config.load(args.config, args.set)  # a bad config fails before any run starts
    out = Path(args.out)
    folders = {}
    for seed in args.seeds:
        folder = out / f"seed-{seed}"
        train = ["train", args.config, "--out", str(folder), "--set", f"train.seed={seed}",
                 *(f"--set={s}" for s in args.set), *(["--quiet"] if args.quiet else [])]
        if checkpoint.holds_run(folder):
            train.append("--resume")
        print(f"seed {seed}: {' '.join(['modmeta', *train])}", file=sys.stderr)
        if main(train) or main(["eval", str(folder), "--json"]):
            raise RuntimeError(f"the run of seed {seed} in {folder} failed (see above); fix it, then run this again "
                               f"to resume")
        folders[seed] = folder
    report = seeds.summarise(folders)
    files.write_atomic(out / "seeds.json", json.dumps(report, indent=1) + "\n")
    print(seeds.table(report))
    print(f"wrote {out / 'seeds.json'}")
    return 0


def _phases(args: argparse.Namespace) -> int:
    out = Path(args.out)
    report = phases.run(config.load(args.config, args.set), out, progress=not args.quiet)
    files.write_atomic(out / "phases.json", json.dumps(report, indent=1) + "\n")
    print(phases.table(report))
    print(f"wrote {out / 'phases.json'}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from modmeta import tune  # needs optuna and scikit-learn: pip install 'modmeta[tune]'

    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    name = args.name or Path(args.config).stem
    features = tune.family_features(config.build(config.load(args.config, args.set)).tasks)
    objective = tune.learner_objective(args.config, args.iterations, args.episodes, args.set)
    study = tune.tune(objective, tune.Store(args.store), name, features, args.trials, warm_start=args.warm_start)
    pruned = sum(t.state.name == "PRUNED" for t in study.trials)
    print(f"{name}: best score {study.best_value:.4g} (accuracy, or minus the MSE) with {study.best_params} "
          f"after {len(study.trials)} trials ({pruned} pruned: diverged)\nstore: {args.store} (study {name!r})")
    return 0


# What `modmeta list` shows: (title, the kind of one entry, the table).
LISTED = (("learners", "learner", registry.LEARNERS), ("task families", "task family", registry.TASKS),
          ("models", "model", registry.MODELS), ("inner optimizers (learner.inner)", "inner optimizer", registry.INNER),
          ("outer updates (learner.outer)", "outer update", registry.OUTER),
          ("priors (learner.prior)", "prior", registry.PRIORS),
          ("aggregations (learner.aggregate)", "aggregation", registry.AGGREGATIONS))


def _list(args: argparse.Namespace) -> int:
    if args.name is not None:
        print(describe(args.name))
        return 0
    for title, _, table in LISTED:
        print(f"{title}:")
        width = max(map(len, table))
        for name, entry in table.items():
            print(f"  {name:<{width}}  {entry.summary}")
    return 0


def describe(name: str) -> str:
    """What ``modmeta list NAME`` prints: for each registered component called ``name`` (a
    learner and an outer update may share one), its summary and its constructor's arguments
    with their types and defaults, marking those modmeta fills in. ``ValueError`` with the
    closest name when there is none."""
    found = [(kind, table[name]) for _, kind, table in LISTED if name in table]
    if not found:
        names = [n for _, _, table in LISTED for n in table]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"nothing is called {name!r}{hint} (`modmeta list` shows every name)")
    blocks = []
    for kind, entry in found:
        lines = [f"{name} ({kind}): {entry.summary}"]
        params = list(inspect.signature(entry.build).parameters.values())
        width = max((len(p.name) for p in params), default=0)
        for i, p in enumerate(params):
            kind_of = "" if p.annotation is p.empty else (
                p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation))
            default = "required" if p.default is p.empty else f"default {p.default!r}"
            filled = _filled_by_modmeta(kind, p.name, i)
            lines.append(f"  {p.name:<{width}}  {kind_of}, {default}" + (f" ({filled})" if filled else ""))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _filled_by_modmeta(kind: str, argument: str, position: int) -> str:
    """Why a config leaves ``argument`` of a ``kind`` of component out, or ``""``."""
    if kind == "learner" and position == 0:
        return "built from the config's model section"
    if kind == "prior" and position == 0:
        return "the learner's model parameters"
    if kind == "model" and argument in config.INFERRED:
        return "read off the task family when left out"
    if kind == "task family" and argument == "split":
        return "modmeta picks the split"
    return ""


def demo_config(learner: str, iterations: int) -> config.Config:
    """The demo's run: MAML's sine regression (K = 10, MLP 1-40-40-1, inner lr 0.01, one
    inner step, meta-batch 25, Adam 1e-3), with ``learner`` ("maml" or "pretrained")."""
    return config.parse({
        "tasks": {"name": "sinusoid", "shots": 10, "queries": 10},
        "model": {"name": "mlp", "hidden": [40, 40]},
        "learner": {"name": learner, "inner_lr": 0.01, "inner_steps": 1},
        "train": {"iterations": iterations, "meta_batch": 25, "optimizer": "adam", "lr": 1e-3, "seed": 0,
                  "val_every": max(iterations // 10, 1), "val_episodes": 100,
                  "checkpoint_every": max(iterations // 10, 1), "log_every": max(iterations // 100, 1)},
        "eval": {"episodes": 600, "steps": 10, "seed": 0},
    }, source="demo")


def _demo(args: argparse.Namespace) -> int:
    # The sine network is tiny: one thread is fastest, and on a busy machine threads of one
    # small operation spend their time waiting for each other.
    torch.set_num_threads(1)
    out = Path(args.out)
    labels = {"maml": "MAML (meta-learned)", "pretrained": "pretrained (baseline)"}
    print(f"modmeta demo: sine regression y = A sin(x - phase) from 10 points per task (MAML, Finn et al. 2017).\n"
          f"Meta-training MAML and a pretrained-then-fine-tuned baseline for {args.iterations} iterations each, "
          f"then testing both on the same {args.episodes} new tasks.\n")
    results: dict[str, Evaluation] = {}
    records = {}
    start = time.perf_counter()
    for name, label in labels.items():
        folder = out / name
        with files.lock(folder):
            files.claim(folder, existing_run=(folder / "config.yaml").exists())
            for old in folder.iterdir():  # the demo's own earlier output
                if old.name != files.MARKER:
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
            run = config.build(demo_config(name, args.iterations))
            files.write_atomic(folder / "config.yaml", yaml.safe_dump(run.config.to_dict(), sort_keys=False))
            print(f"training {label} ...", file=sys.stderr)
            config.trainer(run, folder, progress=not args.quiet).fit(args.iterations)
        best = config.restore(folder)
        results[label] = evaluate(best.learner, best.tasks.split("test"), episodes=args.episodes, steps=10, seed=0)
        records[label] = plot.read_metrics(folder)
    seconds = time.perf_counter() - start
    figure = plot.adaptation({k: v.curve for k, v in results.items()}, "MSE (test tasks)", out / "adaptation.png",
                             "MAML and pretrained on sinusoid, 10 shots: test MSE after k steps")
    curves = plot.learning_curves(records, out / "learning_curves.png", "MAML and pretrained on sinusoid, 10 shots")
    files.write_atomic(out / "results.json", json.dumps({k: v.to_dict() for k, v in results.items()}, indent=1) + "\n")
    print(f"\nMean squared error on {args.episodes} test tasks after k steps of SGD on 10 points "
          f"(lower is better; ± is the 95% confidence interval):\n")
    print(_table(results, steps=(0, 1, 10)))
    print(f"\nboth learners use the same network (1-40-40-1), inner rate 0.01 and test tasks; only MAML "
          f"learned its initialisation for adapting.\n"
          f"took {seconds:.0f} s. runs: {out / 'maml'}, {out / 'pretrained'}  (modmeta eval / plot them)\n"
          f"plots: {figure}, {curves}")
    return 0


# -- helpers -----------------------------------------------------------------------------


def _component_match(run: config.Run, report: dict[str, Any], family: Any,
                     result: Evaluation) -> structures.ComponentMatch | None:
    """For a learner that reports structures, on a family with known components: how its
    modules match them, on the evaluation's own episodes of ``family``."""
    if "structures" not in report:
        return None
    return structures.match(run.learner, family, episodes=result.episodes, seed=result.seed)


def _report_tables(report: dict[str, Any]) -> list[str]:
    """The terminal tables of a learner's report: σ per module, learned inner rates."""
    tables = []
    if "sigma" in report:
        tables.append(_sigma_table(report["sigma"]))
    if "inner_rates" in report:
        rates = report["inner_rates"]
        width = max(map(len, rates))
        rows = [f"  {name:<{width}}  {'  '.join(f'{r:.4g}' for r in values)}" for name, values in rates.items()]
        tables.append("\n".join(["learned inner rates (per step; the mean for per-parameter rates):", *rows]))
    return tables


def _sigma_table(sigmas: dict[str, float]) -> str:
    """σ per module, largest first: large σ is task-specific, small σ shared across tasks."""
    width = max(map(len, sigmas))
    rows = [f"  {name:<{width}}  {value:.4g}" for name, value in sorted(sigmas.items(), key=lambda kv: -kv[1])]
    return "\n".join(["σ per module (large: task-specific, small: shared across tasks):", *rows])


def _report_figures(folder: Path, heading: str) -> list[Path]:
    """The figures of what the run's learner reports: ``sigma.png`` (σ per module),
    ``inner_rates.png`` (learned rates), and for structures the module-usage heat maps, test
    structures and ``structures.json`` (:func:`modmeta.structures.figures`); the tables on the
    terminal. Nothing for a learner that reports nothing, or a folder without a checkpoint."""
    if not (folder / "config.yaml").is_file() or not checkpoint.holds_run(folder):
        return []
    run = config.restore(folder)
    report = run.learner.report()
    for text in _report_tables(report):
        print(text)
    at = f"{heading}, {run.checkpoint.name} at iteration {run.iteration}"
    written = []
    if "sigma" in report:
        title = f"σ per module, {at}\n(large: task-specific, small: shared)"
        written.append(plot.shrinkage(report["sigma"], folder / "sigma.png", title))
    if "inner_rates" in report:
        written.append(plot.inner_rates(report["inner_rates"], folder / "inner_rates.png", f"learned inner rates, {at}"))
    if "structures" in report:
        written += structures.figures(run.learner, config.evaluation_tasks(run), folder, heading=heading)
    return written


def _shown_steps(last: int) -> list[int]:
    """The adaptation steps ``eval`` prints: all up to 20, beyond that 1, 2 and 5 per decade
    (0, 1, 2, 5, 10, 20, 50, 100, ...) and the last."""
    if last <= 20:
        return list(range(last + 1))
    steps = [0] + [m * 10**e for e in range(len(str(last))) for m in (1, 2, 5) if m * 10**e < last]
    return steps + [last]


def _table(results: dict[str, Evaluation], steps: Sequence[int]) -> str:
    """A text table: one row per learner, one column per number of adaptation steps."""
    head = ["learner"] + [f"{k} step{'s' if k != 1 else ''}" for k in steps]
    rows = [[label] + [_number(e.metric, *e.curve[k]) for k in steps] for label, e in results.items()]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def _number(metric: str, mean: float, ci: float) -> str:
    if metric == "accuracy":
        return f"{100 * mean:.2f}% ± {100 * ci:.2f}%"
    return f"{mean:.3f} ± {ci:.3f}"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """modmeta's warnings (``warnings.warn``, the one channel) on one line of standard error."""
    print(f"modmeta: warning: {message}", file=sys.stderr if file is None else file)


def _one_line(e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    text = " ".join(str(text).split()) or type(e).__name__
    return text if isinstance(e, (ValueError, OSError, KeyError, RuntimeError)) else f"{type(e).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
