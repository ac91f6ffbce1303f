#!/usr/bin/env python3
"""Run the authors' MNPWAD reference implementation on a table and a split file.

The same rows as `mnpflow eval --split`: constant columns dropped on the whole table,
min-max scaling fit on the training rows, the split file's train/val/test rows in its `pos`
order, the split file's `semi_y` as the training labels. PyTorch on one thread (as the
published reference figures). Prints one JSON object per seed: AUC-PR (trapezoid, as the
reference computes it), AUC-ROC, fit seconds, predict seconds.

The reference code is not part of this repository and is never committed: pass the folder
of a checkout with --ref-dir (Dongzhijin/MNPWAD; it needs torch 1.13, scikit-learn, pandas,
numpy<2). Used by benches/train_vs_reference.sh.
"""
import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import pandas as pd


def load(table, split):
    df = pd.read_csv(table)
    df.replace([np.inf, -np.inf], np.nan, inplace=True)
    df = df.ffill()
    x = df.values[:, :-1].astype(np.float64)
    keep = np.std(x, axis=0) != 0
    x = x[:, keep]
    sp = pd.read_csv(split)
    parts = {}
    for name in ("train", "val", "test"):
        rows = sp[sp.split == name].sort_values("pos")
        parts[name] = (x[rows.row.values], rows.y.values.astype(int), rows.semi_y.values.astype(int))
    lo = parts["train"][0].min(axis=0)
    span = parts["train"][0].max(axis=0) - lo
    span[span == 0] = 1.0
    scaled = {k: ((v[0] - lo) / span, v[1], v[2]) for k, v in parts.items()}
    return scaled


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-dir", required=True, help="folder of the reference checkout (MNPWAD.py, model.py, ...)")
    ap.add_argument("--table", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--seeds", default="42,43,44")
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(args.ref_dir))
    import torch
    torch.set_num_threads(1)
    import utils
    from MNPWAD import MNPWAD

    data = load(args.table, args.split)
    x_train, _, semi_y = data["train"]
    x_val, y_val, _ = data["val"]
    x_test, y_test, _ = data["test"]
    name = os.path.splitext(os.path.basename(args.table))[0]
    with tempfile.TemporaryDirectory() as out:
        os.makedirs(os.path.join(out, "checkpoints"))
        log = utils.logger(os.path.join(out, "log.txt"))
        for seed in [int(s) for s in args.seeds.split(",")]:
            t0 = time.perf_counter()
            model = MNPWAD(device="cpu", seed=seed, logger=log, output_path=out, dataset_name=name)
            model.fit(x_train, semi_y, val_x=x_val, val_y=y_val)
            t1 = time.perf_counter()
            score = model.predict(x_test)
            t2 = time.perf_counter()
            auroc, aupr = utils.evaluate(y_test, score)
            print(json.dumps({"table": name, "seed": seed, "auc_pr": aupr, "auc_roc": auroc,
                              "fit_s": t1 - t0, "predict_s": t2 - t1,
                              "prototypes": int(model.n_prototypes)}), flush=True)


if __name__ == "__main__":
    main()
