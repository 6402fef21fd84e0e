"""The geometry batch comes from its own held-out pool: never test rows, never the validation rows λ is
chosen on, never trained on; a pool smaller than geometry.n_sequences is a warned cap."""

from __future__ import annotations

import pytest

from jepa_audit.cell import GeometryCapWarning, geometry_batch
from jepa_audit.config import Config, DataCfg, load_config
from jepa_audit.data.views import Encoded
from jepa_audit.tasks import load_benchmark


def _pairs(rows):
    return {(e.prompt, e.target) for e in rows}


def test_embedded_pool_is_disjoint_from_train_val_and_test():
    cfg = DataCfg(n_train=600, n_test=100, val_size=64, geometry_size=80)
    s = load_benchmark(cfg, "synth")
    assert s.sizes() == {"train": 456, "val": 64, "geometry": 80, "test": 100}
    regex = {k: {e.target for e in getattr(s, k)} for k in ("train", "val", "geometry", "test")}  # distinct regexes
    assert not regex["geometry"] & regex["val"] and not regex["geometry"] & regex["test"]
    assert not regex["geometry"] & regex["train"]
    assert load_benchmark(cfg, "synth").geometry == s.geometry  # fixed, whatever the cell
    # the pool does not move the validation rows (λ's selection is unchanged by the geometry setting)
    assert load_benchmark(DataCfg(n_train=600, n_test=100, val_size=64, geometry_size=10), "synth").val == s.val


def test_pool_larger_than_train_is_one_clear_error():
    from jepa_audit.data import DataError

    with pytest.raises(DataError, match="data.geometry_size=600"):
        load_benchmark(DataCfg(n_train=600, n_test=100, val_size=64, geometry_size=600), "synth")


def test_real_nlrx_llm_jepa_pool(shared_data):
    cfg = load_config("paper", overrides=[f"data.path={shared_data}"]).data
    assert cfg.geometry_size >= 512
    s = load_benchmark(cfg, "synth")
    assert s.sizes()["geometry"] == cfg.geometry_size
    assert len(s.train) + len(s.val) + len(s.geometry) == 8000 and len(s.test) == 2000
    assert s.val == load_benchmark(cfg.model_copy(update={"geometry_size": 0}), "synth").val


def test_carves_are_disjoint_by_position():
    """Real NL-RX repeats some pairs, so disjointness is a property of positions: checked on unique rows."""
    from jepa_audit.data.carve import carve_geometry, carve_val
    from jepa_audit.data.examples import Example

    rows = [Example(f"nl {i}", f"re {i}", i) for i in range(1000)]
    rest, val = carve_val(rows, 200)
    train, geo = carve_geometry(rest, 512)
    assert len(train) == 288 and len(geo) == 512
    nl = {k: {e.prompt for e in v} for k, v in {"train": train, "val": val, "geo": geo}.items()}
    assert not nl["geo"] & nl["val"] and not nl["geo"] & nl["train"] and not nl["val"] & nl["train"]
    assert len(nl["geo"] | nl["val"] | nl["train"]) == 1000


def _rows(n: int) -> list[Encoded]:
    return [Encoded([1, 5, 6, 7, 2, 9, 3], 5, 1, 3, [1, 9, 3], 1, i) for i in range(n)]


def test_geometry_batch_warns_when_the_pool_caps_it():
    cfg = Config()
    cfg.geometry.n_sequences = 64
    with pytest.warns(GeometryCapWarning, match="capped at the 40 rows"):
        b = geometry_batch(cfg, _rows(40), pad_id=0)
    assert b.input_ids.shape[0] == 40
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert geometry_batch(cfg, _rows(100), pad_id=0).input_ids.shape[0] == 64


def test_paper_presets_measure_at_least_512_sequences():
    for preset in ("paper", "paper-full-ft"):
        c = load_config(preset)
        assert c.geometry.n_sequences >= 512 and c.data.geometry_size >= c.geometry.n_sequences
