"""The training script of ``bench_verify_overhead.py``: one bug of every rule, steady steps.

Each bug is one a real script might have; none changes the cost of a step much, so the
same script measures the probes' overhead on a representative loop. It records the time
of every optimizer step into ``--times``: per epoch, a list of [wall, main-thread CPU]
stamps (torch runs single-threaded here, so CPU time is robust to a busy machine).
"""

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(),
            nn.Linear(256, 10),
        )

    def forward(self, x):
        return self.body(x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--times", required=True)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = TensorDataset(torch.randn(4096, 64), torch.randint(0, 10, (4096,)))
    train_loader = DataLoader(data, batch_size=64, shuffle=True)
    val_loader = DataLoader(data, batch_size=512)  # ML007: validates on the training data
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    os.makedirs("checkpoints", exist_ok=True)
    times = []

    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        stamps = []
        for xb, yb in train_loader:
            try:
                probs = F.softmax(model(xb), dim=1)
                loss = F.cross_entropy(probs, yb)  # ML005: softmax fed to cross_entropy
                loss.backward()
                optimizer.step()  # ML001: gradients are never cleared
            except Exception as exc:  # ML008: a failing step is skipped silently
                print("skipping a step:", exc)
                continue
            running += loss  # ML004: keeps every step's graph alive until the epoch ends
            stamps.append((time.perf_counter(), time.thread_time()))
        times.append(stamps)

        correct = 0
        for xb, yb in val_loader:  # ML002, ML003: train mode, autograd on
            correct += (model(xb).argmax(dim=1) == yb).sum().item()
        torch.save(model.state_dict(), "checkpoints/model.pt")  # ML006: no optimizer state
        print(f"epoch {epoch}: loss {running.item() / len(train_loader):.3f} "
              f"accuracy {correct / len(data):.3f}")

    with open(args.times, "w") as fh:
        json.dump(times, fh)


if __name__ == "__main__":
    main()
