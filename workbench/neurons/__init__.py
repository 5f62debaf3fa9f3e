"""Language neurons: identification (LAPE, activation probability 90p, CLAS categories, AP expertise), neuron
interventions at ``mlp.hook_post`` with the gated-MLP algebra, the deactivation perplexity check, figures.

    from workbench.neurons import run_neurons, NeuronRunConfig
    summary = run_neurons("lape", "figures/neurons", NeuronRunConfig(languages=("en", "hi", "zh")))

The analysis functions are pure (tensors in, tensors out); :mod:`workbench.neurons.cache` harvests once and caches,
:mod:`workbench.neurons.pipeline` runs a study and writes artifacts. Those names are imported lazily.
"""

from workbench.lazy import lazy_exports
from workbench.neurons.actprob import ActProbConfig, activation_probability_90p, actprob_scores, actprob_select
from workbench.neurons.clas import CATEGORIES, ClasConfig, bridge_masks, categorize, clas, select_bridge_layers
from workbench.neurons.data import ParallelDataConfig, TokenDataConfig, pooled_gate_means
from workbench.neurons.expertise import ExpertiseConfig, average_precision, expertise, expertise_select
from workbench.neurons.gating import GATE_STATISTICS, gate_statistics, require_gated
from workbench.neurons.interventions import (
    BoostGate,
    ClasRescale,
    Deactivate,
    NeuronIntervention,
    SetGate,
    boost_gate,
    clas_rescale,
    deactivate,
    random_like,
    rate_matched_units,
    set_gate,
)
from workbench.neurons.lape import LapeConfig, lape, lape_entropy, lape_select
from workbench.neurons.masks import NeuronError, NeuronMask, jaccard, jaccard_matrix

_LAZY = {
    "NeuronRunConfig": "workbench.neurons.cache", "run_neurons": "workbench.neurons.pipeline",
    "identify": "workbench.neurons.cache", "cached_mask": "workbench.neurons.cache",
    "language_statistics": "workbench.neurons.cache", "pooled_activations": "workbench.neurons.cache",
    "CausalConfig": "workbench.neurons.causal", "deactivation_matrix": "workbench.neurons.causal",
    "card": "workbench.neurons.cards", "neuron_card": "workbench.neurons.cards",
    "neuron_card_html": "workbench.neurons.cards", "NeuronCard": "workbench.neurons.cards",
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, modules=("plots",))

__all__ = [
    "CATEGORIES", "GATE_STATISTICS", "ActProbConfig", "BoostGate", "ClasConfig", "ClasRescale", "Deactivate",
    "ExpertiseConfig", "LapeConfig", "NeuronError", "NeuronIntervention", "NeuronMask", "ParallelDataConfig",
    "SetGate", "TokenDataConfig", "activation_probability_90p", "actprob_scores", "actprob_select",
    "average_precision", "boost_gate", "bridge_masks", "categorize", "clas", "clas_rescale", "deactivate",
    "expertise", "expertise_select", "gate_statistics", "jaccard", "jaccard_matrix", "lape", "lape_entropy",
    "lape_select", "pooled_gate_means", "random_like", "rate_matched_units", "require_gated",
    "select_bridge_layers", "set_gate",
    *_LAZY,
]
