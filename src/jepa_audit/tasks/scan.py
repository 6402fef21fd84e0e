"""SCAN (Lake & Baroni 2018): a navigation command → its action sequence; exact match of the sequence.

Benchmarks are SCAN's splits (``data.path`` = a local copy of the repo's data, ``../shared/data/scan``):

* ``simple``: random 80/20 (in-distribution);
* ``length``: train on action sequences of ≤ 22 actions, test on longer (generalisation);
* ``addprim_jump``: "jump" seen only alone in training, tested in composition (generalisation);
* ``around_right``: the template split, "around right" never seen in training (generalisation).

The prompt view is the command (``run opposite left after walk right``), the target view the action
sequence, each action written as one word (:data:`ACTION_WORDS`: ``I_TURN_RIGHT I_WALK I_TURN_LEFT
I_TURN_LEFT I_RUN`` → ``RTURN WALK LTURN LTURN RUN``).  Why: a byte-level BPE splits ``I_TURN_LEFT`` at its
underscores into five tokens, so a 48-action answer would be 240 tokens; as words it is 48.  The mapping is
a bijection, so exact match of the words is exact match of the action sequence.  The repo has no validation split: val and the
geometry pool are carved from train.  There is no pre-training pool (every command of SCAN's grammar is in
some test split, so no generated command is disjoint from the benchmarks): the tiny base is its random
init, and cells learn SCAN from scratch, as the SCAN paper's models do.  ``tasks.txt`` (every command,
test included) is never read.

``data.max_test`` takes a **uniform sample** of the test file (fixed seed :data:`TEST_SAMPLE_SEED`, kept in
file order), not its first N lines as for NL-RX: the generalisation files are ordered (the length split's
test file starts with its 24-action sequences, so its first 400 lines are all of length 24 or 25, the
easiest of the split), and a prefix would audit the easiest corner of the split.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from jepa_audit.data.examples import DataError, Example, Splits
from jepa_audit.data.lines import read_lines
from jepa_audit.tasks.base import DataSettings, MetricSpec, Task, carved_splits, count_lines, register_task

#: benchmark → (folder, file stem) of its ``tasks_{train,test}_<stem>.txt`` files
SPLITS: dict[str, tuple[str, str]] = {
    "simple": ("simple_split", "simple"),
    "length": ("length_split", "length"),
    "addprim_jump": ("add_prim_split", "addprim_jump"),
    "around_right": ("template_split", "template_around_right"),
}


#: SCAN's action tokens → the one-word form the target view uses (a bijection)
ACTION_WORDS: dict[str, str] = {
    "I_TURN_LEFT": "LTURN", "I_TURN_RIGHT": "RTURN", "I_WALK": "WALK", "I_RUN": "RUN", "I_JUMP": "JUMP",
    "I_LOOK": "LOOK",
}  # fmt: skip

#: the seed of the uniform test sample ``data.max_test`` takes (never a cell seed: every cell sees the same)
TEST_SAMPLE_SEED = 20180718


def sample_test(test: list[Example], n: int | None) -> list[Example]:
    """``n`` examples of ``test`` drawn uniformly without replacement (seed :data:`TEST_SAMPLE_SEED`), in
    file order; all of ``test`` when ``n`` is None or not smaller."""
    if n is None or n >= len(test):
        return test
    keep = sorted(random.Random(TEST_SAMPLE_SEED).sample(range(len(test)), n))
    return [test[i] for i in keep]


def read_scan(path: Path) -> list[Example]:
    """The ``IN: <command> OUT: <actions>`` lines of one SCAN file as examples (idx = line number), actions
    written as :data:`ACTION_WORDS`."""
    out = []
    for i, line in enumerate(read_lines(path, "one 'IN: <command> OUT: <actions>' per line")):
        head, sep, actions = line.partition(" OUT: ")
        if not sep or not head.startswith("IN: ") or not actions.strip():
            raise DataError(f"{path} line {i + 1}: expected 'IN: <command> OUT: <actions>', got {line[:80]!r}")
        bad = sorted(set(actions.split()) - set(ACTION_WORDS))
        if bad:
            raise DataError(f"{path} line {i + 1}: unknown action(s) {bad}; expected {', '.join(ACTION_WORDS)}")
        out.append(Example(prompt=head[4:].strip(), target=" ".join(ACTION_WORDS[a] for a in actions.split()), idx=i))
    return out


@register_task
class ScanTask(Task):
    name = "scan"
    description = "SCAN: navigation command → action sequence (Lake & Baroni 2018); exact match of the sequence"
    benchmarks = tuple(SPLITS)
    sources = ("local",)
    system_prompt = "Translate the command into actions."
    metrics = (MetricSpec("exact_match", "exact", True, "the predicted action sequence equals the gold one"),)

    def load(self, cfg: DataSettings, benchmark: str) -> Splits:
        self.check_benchmark(benchmark)
        folder, stem = SPLITS[benchmark]
        root = self.local_root(cfg) / folder
        train = read_scan(root / f"tasks_train_{stem}.txt")
        test = sample_test(read_scan(root / f"tasks_test_{stem}.txt"), cfg.max_test)
        where = f"SCAN {benchmark} split from {root}"
        if cfg.max_test is not None:
            where += f"; test: {len(test)} commands sampled uniformly (seed {TEST_SAMPLE_SEED}, file order)"
        return carved_splits(cfg, benchmark, train, test, where)

    def test_rows(self, cfg: DataSettings, benchmark: str) -> int | None:
        folder, stem = SPLITS.get(benchmark, ("", ""))
        return count_lines(Path(cfg.path) / folder / f"tasks_test_{stem}.txt") if cfg.path and stem else None

    def score_item(self, ex: Example, pred: str, scorer: Any) -> dict[str, Any]:
        """``exact``: the whitespace-normalised action sequence equals the gold one."""
        return {"exact": " ".join(pred.split()) == ex.target}

    def stats(self, splits: Splits) -> dict[str, Any]:
        out = super().stats(splits)
        for part in ("train", "test"):
            n = [len(e.target.split()) for e in getattr(splits, part)]
            out[f"{part}_actions_max"] = max(n, default=0)
        return out
