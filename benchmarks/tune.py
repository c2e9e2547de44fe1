"""Warm-started hyperparameter search, leave-one-data-set-out, on a precomputed table.

The data sets: the 50 Omniglot alphabets, each a classification data set (its characters are
the classes, 20 drawings each, 28x28 pixels), and scikit-learn's bundled iris, wine,
breast-cancer and digits. The classifier: standardisation, PCA whitened to ``2^log2_dims``
components, then an RBF support vector machine with ``C = 10^log10_C`` and
``gamma = 10^log10_gamma / dims``, scored by accuracy on a stratified half of the data set
held out from training (split seed 0). Every configuration of the grid ``GRID`` (7 x 6 x 4 =
168) is scored on every data set ONCE, with the data sets' meta-features (simple,
statistical, landmarkers), and cached in ``benchmarks/results/tune-table.json``; a search then
only looks scores up, so thousands of searches are cheap.

Leave-one-data-set-out: every data set in turn is the new one, and the store holds the other
53 with all their scores. The methods, each with ``--trials`` trials and ``--seeds`` seeds:
random search and cold TPE (Optuna's samplers, seeded), the learned defaults (the
configurations with the best average rank over the other data sets, tried in that order;
deterministic), warm starts (the best configurations of the k nearest data sets by
meta-features first, then TPE) and the transfer sampler (the stored studies' surrogates
weighted by Kendall tau). Regret is the best accuracy of the grid on the data set minus the
best found so far, in percentage points. Results go to ``benchmarks/results/tune.json`` (the
mean curves, and every run's regret at 5, 10, 20 and 50 trials) and a table is printed.

    OMP_NUM_THREADS=1 python benchmarks/tune.py --root /work/shared/data/omniglot --seeds 5
    OMP_NUM_THREADS=1 python benchmarks/tune.py --importance     # fANOVA over the 54 tables
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import optuna

from modmeta.tasks.omniglot import load_omniglot
from modmeta.tune import Store, TransferSampler, importance, learned_defaults, meta_features, warm_configurations
from machine import cpu_name

RESULTS = Path(__file__).parent / "results"
TABLE = RESULTS / "tune-table.json"
GRID = {"log10_C": list(range(-1, 6)), "log10_gamma": list(range(-3, 3)), "log2_dims": list(range(3, 7))}
CHECKPOINTS = (5, 10, 20, 50)


def data_sets(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every data set of the benchmark by name: ``(x [N, D] float64, y [N] int)``."""
    from sklearn import datasets

    sets = {}
    for name in ("iris", "wine", "breast_cancer", "digits"):
        x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        sets[f"sklearn/{name}"] = x.astype(np.float64), y
    chars = load_omniglot(root)
    for alphabet in sorted(set(chars.alphabets)):
        index = [i for i, a in enumerate(chars.alphabets) if a == alphabet]
        images = chars.images[index].astype(np.float64) / 255
        sets[f"omniglot/{alphabet}"] = images.reshape(-1, images.shape[-1] ** 2), np.repeat(np.arange(len(index)), 20)
    return sets


def score_grid(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Held-out accuracy of every configuration of ``GRID``, by :func:`key`."""
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.5, stratify=y, random_state=0)
    scaler = StandardScaler().fit(x_train)
    top = min(2 ** max(GRID["log2_dims"]), x.shape[1], len(x_train) - 1)
    pca = PCA(top, whiten=True, random_state=0).fit(scaler.transform(x_train))
    z_train, z_val = (pca.transform(scaler.transform(a)) for a in (x_train, x_val))
    scores = {}
    for c, g, d in itertools.product(*GRID.values()):
        dims = min(2**d, top)
        svm = SVC(C=10.0**c, gamma=10.0**g / dims).fit(z_train[:, :dims], y_train)
        scores[key({"log10_C": c, "log10_gamma": g, "log2_dims": d})] = float(svm.score(z_val[:, :dims], y_val))
    return scores


def key(params: dict[str, int]) -> str:
    """A configuration as a table key, ``"C,gamma,dims"`` exponents."""
    return ",".join(str(params[name]) for name in GRID)


def precompute(root: Path) -> dict:
    """The table: every data set's meta-features and grid scores (read from ``TABLE`` if there)."""
    if TABLE.exists():
        return json.loads(TABLE.read_text())
    start, table = time.process_time(), {}
    for name, (x, y) in data_sets(root).items():
        table[name] = {"features": meta_features(x, y), "scores": score_grid(x, y)}
        print(f"{name}: best {max(table[name]['scores'].values()):.3f} "
              f"({time.process_time() - start:.0f} CPU s so far)", file=sys.stderr)
    record = {"grid": GRID, "cpu_seconds": time.process_time() - start, "date": date.today().isoformat(),
              "machine": f"{cpu_name()}, {platform.python_version()}",
              "data_sets": table}
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(json.dumps(record, indent=1) + "\n")
    return record


def suggest(trial: optuna.Trial) -> dict[str, int]:
    """The grid as Optuna integer parameters."""
    return {name: trial.suggest_int(name, values[0], values[-1]) for name, values in GRID.items()}


def stored(table: dict) -> Store:
    """An in-memory store with one study per data set holding every grid configuration's score."""
    store = Store(None)
    distributions = {name: optuna.distributions.IntDistribution(v[0], v[-1]) for name, v in GRID.items()}
    for name, entry in table.items():
        study = store.study(name, entry["features"])
        study.add_trials([optuna.trial.create_trial(params=dict(zip(GRID, map(int, k.split(",")))),
                                                    distributions=distributions, value=v)
                          for k, v in entry["scores"].items()])
    return store


def search(scores: dict[str, float], sampler: optuna.samplers.BaseSampler, trials: int,
           first: list[dict[str, int]] = ()) -> list[float]:
    """Best score so far after each of ``trials`` trials of ``sampler``, ``first`` enqueued."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for params in first:
        study.enqueue_trial(params)
    study.optimize(lambda trial: scores[key(suggest(trial))], n_trials=trials)
    return np.maximum.accumulate([t.value for t in study.trials]).tolist()


def simulate(table: dict, seeds: int, trials: int) -> dict[str, dict[str, list[list[float]]]]:
    """Regret curves, ``[method][data set][seed][trial]``, leave-one-data-set-out."""
    store = stored(table)
    defaults = functools.cache(lambda target: learned_defaults(store, [n for n in table if n != target], n=trials))
    methods: dict[str, Callable[[str, dict, list[str], int], list[float]]] = {
        "random search": lambda t, e, others, s: search(e["scores"], optuna.samplers.RandomSampler(seed=s), trials),
        "cold TPE": lambda t, e, others, s: search(e["scores"], optuna.samplers.TPESampler(seed=s), trials),
        "learned defaults": lambda t, e, others, s: np.maximum.accumulate(
            [e["scores"][key(p)] for p in defaults(t)]).tolist(),
        **{f"warm start k={k} + TPE": (lambda t, e, others, s, k=k: search(
            e["scores"], optuna.samplers.TPESampler(seed=s), trials,
            warm_configurations(store, e["features"], k, exclude=[t]))) for k in (1, 3, 10)},
        "transfer sampler": lambda t, e, others, s: search(e["scores"], TransferSampler(store, others, seed=s), trials),
    }
    curves: dict[str, dict[str, list[list[float]]]] = {m: {} for m in methods}
    for n, (target, entry) in enumerate(table.items()):
        others = [name for name in table if name != target]
        best = max(entry["scores"].values())
        for method, run in methods.items():
            runs = [run(target, entry, others, s) for s in range(seeds)]
            curves[method][target] = [[100 * (best - v) for v in r] for r in runs]
        print(f"{n + 1}/{len(table)} {target}", file=sys.stderr)
    return curves


def summary(curves: dict[str, dict[str, list[list[float]]]]) -> dict[str, dict]:
    """Per method: mean regret over data sets (each averaged over seeds) and its 95% CI, per trial."""
    out = {}
    for method, by_set in curves.items():
        per_set = np.array([np.mean(runs, axis=0) for runs in by_set.values()])  # [data sets, trials]
        mean = per_set.mean(0)
        ci = 1.96 * per_set.std(0, ddof=1) / math.sqrt(len(per_set))
        out[method] = {"mean": mean.tolist(), "ci95": ci.tolist()}
    return out


def table_text(stats: dict[str, dict], seeds: int) -> str:
    """Markdown tables: each method's regret after ``CHECKPOINTS`` trials, and the first trial at
    which its mean regret is at most cold TPE's after 10, 20 and the last trial."""
    cold, last = stats["cold TPE"]["mean"], len(stats["cold TPE"]["mean"])
    lines = ["| method | " + " | ".join(f"after {n}" for n in CHECKPOINTS) + f" | trials to cold TPE's {last}-trial regret |",
             "| --- |" + " ---: |" * (len(CHECKPOINTS) + 1)]
    reach = {m: [next((i + 1 for i, v in enumerate(s["mean"]) if v <= cold[n - 1]), None) for n in (10, 20, last)]
             for m, s in stats.items()}
    shown = lambda r: str(r) if r else f"> {last}"  # noqa: E731
    for method, s in stats.items():
        cells = [f"{s['mean'][n - 1]:.2f} ± {s['ci95'][n - 1]:.2f}" for n in CHECKPOINTS]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {shown(reach[method][-1])} |")
    lines += ["", f"regret in accuracy points, mean over data sets (each the mean of {seeds} seeds) ± 95% CI", "",
              "| method | " + " | ".join(f"cold TPE at {n} ({cold[n - 1]:.2f})" for n in (10, 20, last)) + " |",
              "| --- | ---: | ---: | ---: |"]
    lines += [f"| {m} | " + " | ".join(map(shown, r)) + " |" for m, r in reach.items() if m != "cold TPE"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/work/shared/data/omniglot"), help="the Omniglot archives")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--importance", action="store_true",
                        help="only print each hyperparameter's fANOVA importance averaged over the data sets")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    record = precompute(args.root)
    if args.importance:
        print(json.dumps(importance(stored(record["data_sets"]))))
        return 0
    start = time.process_time()
    curves = simulate(record["data_sets"], args.seeds, args.trials)
    stats = summary(curves)
    result = {"command": " ".join(sys.argv), "date": date.today().isoformat(), "seeds": args.seeds,
              "trials": args.trials, "table_cpu_seconds": record["cpu_seconds"],
              "search_cpu_seconds": time.process_time() - start, "summary": stats,
              "regret_at": {m: {name: [[round(r[n - 1], 3) for n in CHECKPOINTS] for r in runs]
                                for name, runs in by_set.items()} for m, by_set in curves.items()}}
    (RESULTS / "tune.json").write_text(json.dumps(result) + "\n")
    print(table_text(stats, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
