"""AuditProgress.poll: what pool/Ray workers wrote to their attempt folders reaches the display."""

from __future__ import annotations

import io
import json

from jepa_audit.audit.executors import read_progress
from jepa_audit.audit.progress import AuditProgress


def test_poll_reads_each_running_cells_attempt_folder(tmp_path):
    attempt = tmp_path / "cells" / "synth__T1__s82__lora" / "attempt-1"
    attempt.mkdir(parents=True)
    (attempt / "progress.json").write_text(json.dumps({"phase": "train", "step": 3, "total": 10, "loss": 1.5}))
    out = io.StringIO()
    with AuditProgress(2, 0, 2, stream=out, live=False) as prog:
        prog.started("synth__T1__s82__lora")
        prog.started("synth__ce__s82__lora")  # nothing written yet: stays as it was
        prog.poll(lambda key: read_progress(attempt if key == "synth__T1__s82__lora" else tmp_path / "none"))
        assert prog.running["synth__T1__s82__lora"]["event"]["step"] == 3
        assert not prog.running["synth__ce__s82__lora"].get("event")
