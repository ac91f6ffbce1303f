#!/usr/bin/env python3
"""Peers on the very same flow records as `mnpflow eval --scenario ... --export DIR`.

Reads every DIR/NAME.seedS.train.csv / .test.csv pair written by the export and prints, per
scenario, the same figures as mnpflow's table (mean +- std over seeds):

- isolation forest (scikit-learn, no labels: the unsupervised peer);
- random forest (scikit-learn, trained on the labeled attacks against every unlabeled row:
  the supervised baseline with the labels mnpflow gets);
- DevNet (DeepOD), when `deepod` is importable;
- the authors' reference MNPWAD (PyTorch), when given `--ref-dir DIR` (or env MNPWAD_REF=DIR):
  a checkout of Dongzhijin/MNPWAD (MNPWAD.py, model.py, utils.py, utils_pretrain.py,
  Dataset.py; never part of this repository; torch 1.13, scikit-learn, pandas, numpy<2). Its
  own defaults and entry points as benches/reference/run_reference.py calls them
  (`MNPWAD(device="cpu", seed=...)`, `fit(x, semi_y, val_x, val_y)`, `predict`; n_prototypes
  0: the reference picks 2-10 by silhouette). Early stopping needs a labeled validation set:
  5 % of each class of the `labeled` flags (at least one row each), drawn by seed, held out
  of its fit, the flags as the validation labels, as `mnpflow train` holds out its own (the
  reference's train.py would use truth labels there, which this benchmark gives no method).
  For one thread, as the published reference figures: OMP_NUM_THREADS=1.

Each peer's alert threshold holds a 1 % budget on its own training rows that are not labeled
attacks, by mnpflow's rule (the cut lets through as many as keep the budget with 90 %
confidence: `allowed_above`), as mnpflow's default threshold does.

Needs: scikit-learn, numpy (pip install scikit-learn numpy; deepod for DevNet).
Usage: benches/detection_peers.py [--ref-dir REF_DIR] DIR
"""

import argparse
import atexit
import glob
import os
import shutil
import sys
import tempfile
import types
from collections import defaultdict

import numpy as np


def load(path):
    with open(path) as f:
        head = f.readline().rstrip("\n").split(",")
    raw = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=str)
    raw = raw.reshape(-1, len(head))
    nf = len(head) - 4
    x = raw[:, :nf].astype(np.float64)
    labeled = raw[:, nf].astype(int)
    label = raw[:, nf + 1].astype(int)
    kind = raw[:, nf + 2]
    unseen = raw[:, nf + 3].astype(int)
    return head[:nf], x, labeled, label, kind, unseen


def minmax(train, test):
    lo, hi = train.min(axis=0), train.max(axis=0)
    keep = hi > lo
    span = np.where(keep, hi - lo, 1.0)
    return ((train - lo) / span)[:, keep], ((test - lo) / span)[:, keep]


def auc_pr(y, s):
    # Trapezoid under the PR curve over distinct thresholds, as mnpflow and the reference.
    from sklearn.metrics import auc, precision_recall_curve

    p, r, _ = precision_recall_curve(y, s)
    return auc(r, p)


def tpr_at_fpr(y, s, fpr=0.01):
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    pos, neg = y.sum(), len(y) - y.sum()
    tp = fp = 0
    best = 0.0
    i = 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            tp += y[j]
            fp += 1 - y[j]
            j += 1
        if fp / neg > fpr:
            break
        best = tp / pos
        i = j
    return best


def allowed_above(n, budget, confidence=0.9):
    """mnpflow's rule (src/alert/threshold.rs): the largest k with P(Bin(n, budget) <= k) <=
    1 - confidence, 0 when none is; the cut lets k of the n training normals through."""
    from scipy.stats import binom

    k = 0
    while k < n and binom.cdf(k + 1, n, budget) <= 1 - confidence:
        k += 1
    return k


def budget_cut(train_scores, labeled, budget=0.01):
    normal = np.sort(train_scores[labeled == 0])[::-1]
    k = allowed_above(len(normal), budget)
    return np.nextafter(normal[k], np.inf) if k < len(normal) else -np.inf


def judge(y, s, cut, kind, unseen):
    from sklearn.metrics import roc_auc_score

    alert = s >= cut
    tp, fp = int((alert & (y == 1)).sum()), int((alert & (y == 0)).sum())
    neg = int((y == 0).sum())
    out = {
        "AUC-PR": auc_pr(y, s),
        "AUC-ROC": roc_auc_score(y, s),
        "TPR at 1% FPR": tpr_at_fpr(y, s),
        "precision at threshold": tp / (tp + fp) if tp + fp else 0.0,
        "recall at threshold": tp / int(y.sum()),
        "FPR at threshold": fp / neg,
    }
    # Seen kinds, then the unseen ones, each by name, as mnpflow's table orders them.
    for new, k in sorted({(int(u), k) for k, u in zip(kind[y == 1], unseen[y == 1])}):
        m = (kind == k) & (y == 1)
        out["recall " + k + (" (unseen)" if new else "")] = float(alert[m].mean())
    return out


def iforest(xtr, labeled, xte, seed):
    from sklearn.ensemble import IsolationForest

    m = IsolationForest(n_estimators=200, random_state=seed).fit(xtr)
    return -m.score_samples(xtr), -m.score_samples(xte)


def random_forest(xtr, labeled, xte, seed):
    from sklearn.ensemble import RandomForestClassifier

    m = RandomForestClassifier(n_estimators=200, random_state=seed, class_weight="balanced").fit(xtr, labeled)
    return m.predict_proba(xtr)[:, 1], m.predict_proba(xte)[:, 1]


def devnet(xtr, labeled, xte, seed):
    from deepod.models.tabular import DevNet

    import torch

    # DeepOD defaults to device="cuda" and fails on a machine without one.
    m = DevNet(random_state=seed, verbose=0, device="cuda" if torch.cuda.is_available() else "cpu")
    m.fit(xtr, labeled)
    return m.decision_function(xtr), m.decision_function(xte)


def reference_mnpwad(ref_dir):
    """The authors' MNPWAD from the checkout at `ref_dir`, as a peer function."""
    sys.path.insert(0, os.path.abspath(ref_dir))
    # The reference's utils.py imports ipdb and matplotlib and uses neither: empty stand-ins
    # when they are not installed (nothing of theirs is called).
    for missing in ("ipdb", "matplotlib", "matplotlib.pyplot"):
        try:
            __import__(missing)
        except ImportError:
            stub = types.ModuleType(missing)
            stub.set_trace = lambda *a, **k: None
            sys.modules[missing] = stub
            if "." in missing:
                setattr(sys.modules[missing.split(".")[0]], "pyplot", stub)
    import utils  # the reference's
    from MNPWAD import MNPWAD

    out = tempfile.mkdtemp(prefix="mnpwad-ref-")  # its log and early-stopping checkpoints
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    log = utils.logger(os.path.join(out, "log.txt"))

    def run(xtr, labeled, xte, seed):
        # 5 % of each class of the labels (at least one row) held out for early stopping.
        rng = np.random.default_rng(seed)
        val = np.zeros(len(labeled), dtype=bool)
        for c in (0, 1):
            idx = rng.permutation(np.flatnonzero(labeled == c))
            n = max(1, int(round(0.05 * len(idx)))) if len(idx) > 1 else 0
            val[idx[:n]] = True
        fit = ~val
        m = MNPWAD(device="cpu", seed=seed, logger=log, output_path=out, dataset_name=f"peer{seed}")
        m.fit(xtr[fit], labeled[fit], val_x=xtr[val], val_y=labeled[val])
        print(f"reference MNPWAD seed {seed}: {int(m.n_prototypes)} prototypes, fit on {fit.sum()} rows"
              f" ({int(labeled[fit].sum())} labeled), validation {val.sum()} ({int(labeled[val].sum())} labeled)",
              file=sys.stderr)
        return m.predict(xtr), m.predict(xte)

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="the folder `mnpflow eval --scenario ... --export` wrote")
    ap.add_argument("--ref-dir", default=os.environ.get("MNPWAD_REF") or None,
                    help="a checkout of the reference MNPWAD (default: env MNPWAD_REF; none: left out)")
    args = ap.parse_args()
    peers = [("isolation forest (no labels)", iforest), ("random forest (supervised)", random_forest)]
    try:
        import deepod  # noqa: F401

        peers.append(("DevNet (DeepOD)", devnet))
    except ImportError:
        print("deepod not importable: DevNet left out", file=sys.stderr)
    if args.ref_dir:
        peers.append(("reference MNPWAD (authors' PyTorch)", reference_mnpwad(args.ref_dir)))
    runs = defaultdict(lambda: defaultdict(list))
    for train_path in sorted(glob.glob(os.path.join(args.dir, "*.train.csv"))):
        base = os.path.basename(train_path)[: -len(".train.csv")]
        name, seed = base.rsplit(".seed", 1)
        seed = int(seed)
        _, xtr, labeled, _, _, _ = load(train_path)
        _, xte, _, y, kind, unseen = load(train_path.replace(".train.csv", ".test.csv"))
        xtr_s, xte_s = minmax(xtr, xte)
        for peer, fn in peers:
            try:
                s_tr, s_te = fn(xtr_s, labeled, xte_s, seed)
            except Exception as e:  # a peer that cannot run here is named, not fatal
                print(f"{peer} on {base}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            runs[name][peer].append(judge(y, s_te, budget_cut(s_tr, labeled), kind, unseen))
    for name, by_peer in runs.items():
        print(f"\nscenario {name} (peers on the same flows)\n")
        cols = ["AUC-PR", "AUC-ROC", "TPR at 1% FPR", "precision at threshold", "recall at threshold", "FPR at threshold"]
        print("| method | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for peer, results in by_peer.items():
            cells = [f"{np.mean([r[c] for r in results]):.3f} ± {np.std([r[c] for r in results]):.3f}" for c in cols]
            print(f"| {peer} | " + " | ".join(cells) + " |")
        # In judge's order (dicts keep insertion order).
        kinds = [k for k in next(iter(by_peer.values()))[0] if k.startswith("recall ") and k != "recall at threshold"]
        print("\n| method | " + " | ".join(k[len("recall "):] for k in kinds) + " |")
        print("|---" * (len(kinds) + 1) + "|")
        for peer, results in by_peer.items():
            print(f"| {peer} | " + " | ".join(f"{np.mean([r.get(k, 0.0) for r in results]):.2f}" for k in kinds) + " |")


if __name__ == "__main__":
    main()
