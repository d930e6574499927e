"""Plain numerics vs periodic numeric embeddings, same network, data, seeds and loop.

    .venv/bin/python benchmarks/numeric_embeddings.py --run-dir <lake>/runs/flights/2013-12-31

Reads a finished night's features (training window + holdout) and preprocessor, trains the
same TabularNet with `numeric_embedding` "none" and "periodic" side by side (one process,
one torch thread each, the same seeds and batches), and prints per seed: seconds, the
validation AUC per epoch on the window's last 14 days, and the holdout AUC at the epoch
that validation picks (the holdout never picks anything).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from tasks.datasets import get_dataset
from tasks.features.build import load_preprocessor
from tasks.training.loop import validation_mask
from tasks.training.model import NetConfig, TabularNet, member_loss, predict_proba


def train_once(config: NetConfig, data: dict, seed: int, epochs: int, lr: float) -> dict:
    torch.manual_seed(seed)
    net = TabularNet(config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    fit = data["fit"]
    codes, numeric = torch.from_numpy(data["codes"][fit]), torch.from_numpy(data["numeric"][fit])
    labels = torch.from_numpy(data["labels"][fit])
    generator = torch.Generator().manual_seed(seed)
    started, history = time.perf_counter(), []
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), 1024):
            batch = order[start : start + 1024]
            optimizer.zero_grad(set_to_none=True)
            member_loss(net(codes[batch], numeric[batch]), labels[batch]).backward()
            optimizer.step()
        val = ~fit
        val_auc = roc_auc_score(
            data["labels"][val], predict_proba(net, data["codes"][val], data["numeric"][val])
        )
        holdout_auc = roc_auc_score(
            data["y_holdout"], predict_proba(net, data["holdout_codes"], data["holdout_numeric"])
        )
        history.append((val_auc, holdout_auc))
    best = max(range(epochs), key=lambda e: history[e][0])
    return {
        "seconds": time.perf_counter() - started,
        "val": [round(v, 4) for v, _ in history],
        "kept_epoch": best + 1,
        "holdout_at_kept": history[best][1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="<lake>/runs/<dataset>/<as_of>")
    parser.add_argument("--dataset", default="flights")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = get_dataset(args.dataset)
    pre = load_preprocessor(f"{args.run_dir}/features/preprocessor.json")
    train = pd.read_parquet(f"{args.run_dir}/features/train.parquet")
    holdout = pd.read_parquet(f"{args.run_dir}/features/holdout.parquet")
    codes, numeric = pre.transform(spec.feature_frame(train))
    h_codes, h_numeric = pre.transform(spec.feature_frame(holdout))
    data = {
        "codes": codes.astype(np.int64),
        "numeric": numeric,
        "labels": train["label"].to_numpy().astype(np.float32),
        "fit": ~validation_mask(train, 14),
        "holdout_codes": h_codes.astype(np.int64),
        "holdout_numeric": h_numeric,
        "y_holdout": holdout["label"].to_numpy().astype(int),
    }
    print(
        f"{platform.node()} {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}; "
        f"{int(data['fit'].sum())} fitting rows, {int((~data['fit']).sum())} validation rows, "
        f"{len(holdout)} holdout rows; {args.members} members, 128-64, {args.epochs} epochs"
    )
    print("| seed | numerics | s | validation AUC per epoch | kept | holdout AUC at kept |")
    print("|---|---|---:|---|---:|---:|")
    for seed in args.seeds:
        for embedding in ("none", "periodic"):
            config = NetConfig(
                cardinalities=pre.cardinalities,
                n_numeric=pre.n_numeric,
                hidden=[128, 64],
                dropout=0.05,
                members=args.members,
                numeric_embedding=embedding,
            )
            out = train_once(config, data, seed, args.epochs, args.lr)
            print(
                f"| {seed} | {embedding} | {out['seconds']:.0f} | {out['val']} | "
                f"{out['kept_epoch']} | {out['holdout_at_kept']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
