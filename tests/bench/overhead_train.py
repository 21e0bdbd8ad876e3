"""The training script of ``bench_verify_overhead.py``: one bug of every rule, steady steps.

Each bug is one a real script might have; none changes the cost of a step much, so the
same loop measures the probes' overhead on three workloads (``--workload``):

- ``mlp``: a 64-256-256-10 MLP, batch 64 (a step of 2-4 ms: the worst case, where the
  fixed per-step cost of the hooks weighs most);
- ``cnn``: a small ResNet (32 and 64 channels, batch norm, ReLU) on CIFAR-shaped images,
  batch 32, like the CIFAR scripts of the real-script benchmark;
- ``gpt``: a 4-layer GPT (128 wide, 4 heads, context 64, batch 12), nanoGPT's CPU
  configuration of the real-script benchmark.

torch runs on one thread. It records every optimizer step into ``--times``: per epoch, a
list of [wall, process CPU] stamps (``time.process_time``: every thread of the process,
so work a hook hands to another thread is counted too).
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


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.skip = (nn.Sequential() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(cout)))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(Block(32, 32, 1), Block(32, 64, 2), Block(64, 64, 1))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Layer(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab=65, context=64, width=128, heads=4, layers=4):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        self.layers = nn.Sequential(*(Layer(width, heads) for _ in range(layers)))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx):
        x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1]))
        # (batch, vocab, time): the class dimension second, as cross_entropy wants it.
        return self.head(self.ln(self.layers(x))).transpose(1, 2)


def tensors(workload):
    """(inputs, targets, batch size): 64 steps per epoch for mlp and gpt, 32 for cnn."""
    if workload == "mlp":
        return torch.randn(4096, 64), torch.randint(0, 10, (4096,)), 64
    if workload == "cnn":
        return torch.randn(1024, 3, 32, 32), torch.randint(0, 10, (1024,)), 32
    text = torch.randint(0, 65, (768, 65))
    return text[:, :-1], text[:, 1:], 12


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workload", choices=("mlp", "cnn", "gpt"), default="mlp")
    parser.add_argument("--times", required=True)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    inputs, targets, batch_size = tensors(args.workload)
    data = TensorDataset(inputs, targets)
    if args.workload == "cnn":
        model = ResNet()
    elif args.workload == "gpt":
        model = GPT()
    else:
        model = Net()
    train_loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(data, batch_size=256)  # ML007: validates on the training data
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
            stamps.append((time.perf_counter(), time.process_time()))
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
