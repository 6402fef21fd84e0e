"""Statistics for the audit: small, pure functions on arrays (rliable style), plus one glue module.

- :mod:`.paired`: seed-level paired t, CI, Hedges g_z, Wilcoxon, exact sign-flip.
- :mod:`.multiplicity`: Bonferroni, Holm, Benjamini–Hochberg adjusted p-values.
- :mod:`.power`: power and minimum detectable effect of the paired t-test (noncentral t).
- :mod:`.items`: McNemar per seed and the seed-level t-test of its log-odds ratios (the item-level
  result), conditional logit stratified by item (descriptive, conditional on the trained models),
  hierarchical bootstrap over seeds and shared items, paired and unpaired P(improvement).
- :mod:`.coupling`: Spearman ρ between per-method mean Δgeometry (or gradient cosine) and ΔEM.
- :mod:`.summary`: results rows → the summary.json structure (no file I/O).
- :mod:`.columns`: the report tables' columns (which summary keys, header, format kind), one specification for
  the summary's check, report/build.py and both templates.
"""

from .coupling import SpearmanResult, group_means, spearman
from .items import (
    BootstrapResult,
    ConditionalLogitResult,
    McNemarResult,
    SeedLogOddsResult,
    conditional_logit,
    hierarchical_bootstrap,
    mcnemar_exact,
    mcnemar_log_odds,
    probability_of_improvement,
    probability_of_improvement_paired,
    seed_level_log_odds,
)
from .multiplicity import adjust, benjamini_hochberg, bonferroni, holm
from .paired import (
    PairedResult,
    ci95,
    hedges_gz,
    pair_by_seed,
    paired_comparison,
    paired_t,
    signflip_floor,
    signflip_p,
    wilcoxon_p,
)
from .power import mde_pp, mde_sd, power_paired_t
from .summary import build_summary

__all__ = [
    "BootstrapResult",
    "ConditionalLogitResult",
    "McNemarResult",
    "PairedResult",
    "SeedLogOddsResult",
    "SpearmanResult",
    "adjust",
    "benjamini_hochberg",
    "bonferroni",
    "build_summary",
    "ci95",
    "group_means",
    "conditional_logit",
    "hedges_gz",
    "hierarchical_bootstrap",
    "holm",
    "mcnemar_exact",
    "mcnemar_log_odds",
    "mde_pp",
    "mde_sd",
    "pair_by_seed",
    "paired_comparison",
    "paired_t",
    "power_paired_t",
    "probability_of_improvement",
    "probability_of_improvement_paired",
    "seed_level_log_odds",
    "signflip_floor",
    "signflip_p",
    "spearman",
    "wilcoxon_p",
]
