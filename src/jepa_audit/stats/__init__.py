"""Statistics for the audit: small, pure functions on arrays (rliable style), plus one glue module.

- :mod:`.paired`: seed-level paired t, CI, Hedges g_z, Wilcoxon, exact sign-flip.
- :mod:`.multiplicity`: Bonferroni, Holm, Benjamini–Hochberg adjusted p-values.
- :mod:`.power`: power and minimum detectable effect of the paired t-test (noncentral t).
- :mod:`.items`: McNemar per seed, conditional logit stratified by item, hierarchical bootstrap,
  P(improvement).
- :mod:`.coupling`: Spearman ρ between Δgeometry (or gradient cosine) and ΔEM.
- :mod:`.summary`: results rows → the summary.json structure (no file I/O).
"""

from .coupling import SpearmanResult, spearman
from .items import (
    BootstrapResult,
    ConditionalLogitResult,
    McNemarResult,
    conditional_logit,
    hierarchical_bootstrap,
    mcnemar_exact,
    probability_of_improvement,
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
    "SpearmanResult",
    "adjust",
    "benjamini_hochberg",
    "bonferroni",
    "build_summary",
    "ci95",
    "conditional_logit",
    "hedges_gz",
    "hierarchical_bootstrap",
    "holm",
    "mcnemar_exact",
    "mde_pp",
    "mde_sd",
    "pair_by_seed",
    "paired_comparison",
    "paired_t",
    "power_paired_t",
    "probability_of_improvement",
    "signflip_floor",
    "signflip_p",
    "spearman",
    "wilcoxon_p",
]
