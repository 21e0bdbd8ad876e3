"""Findings in code that can never run are dropped (engine/reachability.py)."""

import ast
import textwrap

from mllint.engine.lint import lint_text
from mllint.engine.reachability import unreachable_spans
from mllint.registry import all_rules

DEAD_TEST = textwrap.dedent("""\
    import torch


    class Tuner:
        def test(self):
            return
            self.model.eval()
            correct = 0
            for x, y in self.test_loader:
                out = self.model(x)
                correct += (out.argmax(1) == y).sum().item()
            self.model.train()
            return correct

        def fit(self, optimizer):
            for epoch in range(10):
                for x, y in self.train_loader:
                    optimizer.zero_grad()
                    self.criterion(self.model(x), y).backward()
                    optimizer.step()
                self.test()
""")


def test_a_pass_after_return_is_not_reported():
    live = DEAD_TEST.replace("        return\n", "", 1)
    assert [(f.code, f.line) for f in lint_text("t.py", live, all_rules()).findings] == [
        ("ML003", 9)]
    assert lint_text("t.py", DEAD_TEST, all_rules()).findings == ()


def test_unreachable_spans_cover_each_kind_of_block_end():
    tree = ast.parse(textwrap.dedent("""\
        def f(xs):
            for x in xs:
                if x:
                    continue
                    print(x)
                try:
                    raise ValueError
                    a = 1
                    b = 2
                except ValueError:
                    break
                    c = 3
            return 1
            d = 4
        print(f([]))
    """))
    assert sorted(unreachable_spans(tree)) == [(5, 5), (8, 9), (12, 12), (14, 14)]
