#!/usr/bin/env python3
"""Peers on the very same flow records as `mnpflow eval --scenario ... --export DIR`.

Reads every DIR/NAME.seedS.train.csv / .test.csv pair written by the export and prints, per
scenario, the same figures as mnpflow's table (mean +- std over seeds):

- isolation forest (scikit-learn, no labels: the unsupervised peer);
- random forest (scikit-learn, trained on the labeled attacks against every unlabeled row:
  the supervised baseline with the labels mnpflow gets);
- DevNet (DeepOD), when `deepod` is importable.

Each peer's alert threshold is the cut that flags 1 % of its own training rows that are not
labeled attacks (the same budget mnpflow's default threshold holds).

Needs: scikit-learn, numpy (pip install scikit-learn numpy; deepod for DevNet).
Usage: benches/detection_peers.py DIR
"""

import glob
import os
import sys
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


def budget_cut(train_scores, labeled, budget=0.01):
    normal = np.sort(train_scores[labeled == 0])[::-1]
    k = int(np.floor(budget * len(normal)))
    return np.nextafter(normal[k], np.inf) if k < len(normal) else -np.inf


def judge(y, s, cut, kind):
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
    for k in sorted(set(kind[y == 1])):
        m = (kind == k) & (y == 1)
        out["recall " + k] = float(alert[m].mean())
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


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    peers = [("isolation forest (no labels)", iforest), ("random forest (supervised)", random_forest)]
    try:
        import deepod  # noqa: F401

        peers.append(("DevNet (DeepOD)", devnet))
    except ImportError:
        print("deepod not importable: DevNet left out", file=sys.stderr)
    runs = defaultdict(lambda: defaultdict(list))
    for train_path in sorted(glob.glob(os.path.join(sys.argv[1], "*.train.csv"))):
        base = os.path.basename(train_path)[: -len(".train.csv")]
        name, seed = base.rsplit(".seed", 1)
        seed = int(seed)
        _, xtr, labeled, _, _, _ = load(train_path)
        _, xte, _, y, kind, _ = load(train_path.replace(".train.csv", ".test.csv"))
        xtr_s, xte_s = minmax(xtr, xte)
        for peer, fn in peers:
            try:
                s_tr, s_te = fn(xtr_s, labeled, xte_s, seed)
            except Exception as e:  # a peer that cannot run here is named, not fatal
                print(f"{peer} on {base}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            runs[name][peer].append(judge(y, s_te, budget_cut(s_tr, labeled), kind))
    for name, by_peer in runs.items():
        print(f"\nscenario {name} (peers on the same flows)\n")
        cols = ["AUC-PR", "AUC-ROC", "TPR at 1% FPR", "precision at threshold", "recall at threshold", "FPR at threshold"]
        print("| method | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for peer, results in by_peer.items():
            cells = [f"{np.mean([r[c] for r in results]):.3f} ± {np.std([r[c] for r in results]):.3f}" for c in cols]
            print(f"| {peer} | " + " | ".join(cells) + " |")
        kinds = sorted({k for r in next(iter(by_peer.values())) for k in r if k.startswith("recall ") and k != "recall at threshold"})
        print("\n| method | " + " | ".join(k[len("recall "):] for k in kinds) + " |")
        print("|---" * (len(kinds) + 1) + "|")
        for peer, results in by_peer.items():
            print(f"| {peer} | " + " | ".join(f"{np.mean([r.get(k, 0.0) for r in results]):.2f}" for k in kinds) + " |")


if __name__ == "__main__":
    main()
