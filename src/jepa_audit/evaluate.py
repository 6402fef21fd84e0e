"""Evaluation: batched greedy decoding of a split's prompts, scored per item by the task.

What counts as correct is the task's (:meth:`jepa_audit.tasks.Task.score`): NL-RX scores exact match and
DFA-equivalence accuracy, SCAN exact match of the action sequence, GSM8K the final answer.  Nothing a model
emits can crash an evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from jepa_audit.config import EvalCfg
from jepa_audit.data.examples import Example
from jepa_audit.data.views import Encoded
from jepa_audit.decode import end_ids, greedy_decode
from jepa_audit.tasks import EvalResult, Task, get_task

__all__ = ["EvalResult", "evaluate"]


def evaluate(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    rows: Sequence[Encoded],
    examples: Sequence[Example],
    cfg: EvalCfg,
    progress: Callable[[int], None] | None = None,
    *,
    task: Task | str,
    forward: str = "auto",
) -> EvalResult:
    """Greedy-decode the prompts of ``rows`` and let ``task`` score them against ``examples`` (same order);
    ``forward``: ``model.forward`` (decode.greedy_decode)."""
    task = get_task(task) if isinstance(task, str) else task
    # the end-of-turn the template closes answers with, and every eos id of the model's generation config
    stop = end_ids(model, tok, {r.full[-1] for r in rows})
    out = greedy_decode(
        model,
        [r.prompt for r in rows],
        pad_id=int(tok.pad_token_id),
        stop_ids=stop,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        progress=progress,
        forward=forward,
    )
    preds = [tok.decode(ids, skip_special_tokens=True) for ids in out]
    return task.score(examples, preds, cfg)
