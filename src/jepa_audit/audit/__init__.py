"""The audit: a grid of cells run locally or on Ray, stored resumably, then summarised.

Public API::

    from jepa_audit.audit import run_audit, expand_grid, Cell, Store
    run_audit(cfg, Path("runs/quick"))          # 0 when every cell is done

See docs/audit.md for the directory layout, resume semantics and executors.
"""

from jepa_audit.audit.grid import Cell, cell_key, expand_grid
from jepa_audit.audit.runner import run_audit
from jepa_audit.audit.store import GridChangedError, Store, StoreError, StoreLockedError, load_results

__all__ = [
    "Cell",
    "GridChangedError",
    "Store",
    "StoreError",
    "StoreLockedError",
    "cell_key",
    "expand_grid",
    "load_results",
    "run_audit",
]
