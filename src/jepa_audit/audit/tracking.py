"""Optional experiment tracking: MLflow runs per cell and TensorBoard curves. Off unless asked.

Both packages are optional (``pip install 'jepa-audit[tracking]'``) and imported only when their flag is
set (``--set tracking.mlflow=true``, ``--set tracking.tensorboard=true``). Tracking never decides
anything: results.jsonl is the record; a tracking error is logged and the audit goes on.

- MLflow: one run per finished cell, logged by the runner (the single writer), to ``tracking.mlflow_uri``
  or a local file store ``DIR/mlruns`` (view with ``mlflow ui --backend-store-uri DIR/mlruns``). Params:
  the cell's identity and config hash; metrics: the row's numeric results, and the training curve from
  ``cells/<key>/progress.jsonl``.
- TensorBoard: each cell writes ``cells/<key>/tb`` from its progress events (in the worker); view with
  ``tensorboard --logdir DIR/cells``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from jepa_audit.config import TrackingCfg
from jepa_audit.results import ResultsRow


def flat_metrics(row: dict[str, Any]) -> dict[str, float]:
    """Numeric results of a row as flat names: ``metrics.exact_match``, ``grad_cosine.mean``, ... (only finite
    values; :meth:`jepa_audit.results.ResultsRow.numeric`)."""
    return ResultsRow.parse(row).numeric()


def tensorboard_writer(log_dir: Path) -> Any:
    """A ``SummaryWriter`` (torch's, which needs the ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise RuntimeError("tracking.tensorboard needs: pip install 'jepa-audit[tracking]'") from e
    return SummaryWriter(log_dir=str(log_dir))


class Tracker:
    """Logs finished cells to MLflow (when enabled). Cheap no-op when tracking is off."""

    def __init__(self, cfg: TrackingCfg, out_dir: Path, experiment: str) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.experiment = experiment
        self._client: Any = None
        self._exp_id: str | None = None
        if cfg.mlflow:
            self._start_mlflow()
        if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
            # the writers live in the workers, where an import error would only lose curves silently
            raise RuntimeError("tracking.tensorboard needs: pip install 'jepa-audit[tracking]'")

    @property
    def mlflow_uri(self) -> str:
        return self.cfg.mlflow_uri or f"file:{(self.out_dir / 'mlruns').resolve()}"

    def _start_mlflow(self) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise RuntimeError("tracking.mlflow needs: pip install 'jepa-audit[tracking]'") from e
        if self.mlflow_uri.startswith("file:"):
            # MLflow ≥ 3 refuses the file store unless told; a local file store is what we want here
            # (no server, no database, lives beside the results)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = MlflowClient(tracking_uri=self.mlflow_uri)
        exp = self._client.get_experiment_by_name(self.experiment)
        self._exp_id = exp.experiment_id if exp else self._client.create_experiment(self.experiment)

    def cell_done(self, key: str, row: dict[str, Any], cell_dir: Path) -> None:
        if self._client is None:
            return
        try:
            self._log_run(key, row, cell_dir)
        except Exception as e:  # tracking must never fail the audit
            warnings.warn(f"MLflow logging failed for {key}: {e}", stacklevel=2)

    def _log_run(self, key: str, row: dict[str, Any], cell_dir: Path) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        tags = {"cell": key, "config_hash": str(row.get("config_hash")), "jepa_audit.status": "done"}
        run = self._client.create_run(self._exp_id, run_name=key, tags=tags)
        rid = run.info.run_id
        params = [Param(k, str(row.get(k))) for k in ("benchmark", "method", "seed", "mode", "config_hash")]
        metrics = [Metric(k, v, now, 0) for k, v in flat_metrics(row).items()]
        log = cell_dir / "progress.jsonl"
        if log.exists():
            for line in log.read_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                step, phase = ev.get("step"), ev.get("phase") or "train"
                if not isinstance(step, int) or phase == "eval":  # eval "steps" count test items
                    continue
                ts = int(float(ev.get("time", now / 1000)) * 1000)
                for k, v in ev.items():
                    if (
                        k not in ("step", "total", "time")
                        and isinstance(v, (int, float))
                        and not isinstance(v, bool)
                        and math.isfinite(v)
                    ):
                        metrics.append(Metric(f"{phase}.{k}", float(v), ts, step))
        for i in range(0, len(metrics), 900):  # MLflow caps a batch at 1000 metrics
            self._client.log_batch(rid, metrics=metrics[i : i + 900], params=params if i == 0 else [])
        if not metrics:
            self._client.log_batch(rid, params=params)
        self._client.set_terminated(rid)
