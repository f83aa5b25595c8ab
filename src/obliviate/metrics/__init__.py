"""Metrics: did it forget, and what did it cost. Every key is defined in ``docs/metrics.md``."""
from .accuracy import accuracy, per_class_accuracy
from .backdoor import TriggerPatch, apply_trigger, backdoor_asr, backdoor_info, plant_backdoor
from .cost import cost_metrics
from .divergence import activation_distance, js_divergence, mean_js, random_init_like, zrf_score
from .evaluate import CORE_KEYS, METRICS_FILE, check_compatible, evaluate
from .gradcam import gradcam, plot_gradcam_grid
from .lira import PerExampleMIA, ShadowSet, logit_confidence, per_example_metrics, shadow_set
from .mia import MIA_ATTACKS, all_attacks, mia_entropy, mia_loss_lr, mia_loss_threshold, mia_svc_efficacy
from .outputs import entropy, per_sample_loss, softmax_outputs, true_class_confidence
from .predictions import PredictionDistribution, plot_prediction_distribution, prediction_distribution
from .relearn import RelearnResult, anamnesis_index, relearn_time
from .weights import layer_distances, plot_layer_distances, total_distance, weight_distance

__all__ = [
    "accuracy", "per_class_accuracy",
    "TriggerPatch", "apply_trigger", "backdoor_asr", "backdoor_info", "plant_backdoor",
    "cost_metrics",
    "activation_distance", "js_divergence", "mean_js", "random_init_like", "zrf_score",
    "CORE_KEYS", "METRICS_FILE", "check_compatible", "evaluate",
    "gradcam", "plot_gradcam_grid",
    "PerExampleMIA", "ShadowSet", "logit_confidence", "per_example_metrics", "shadow_set",
    "MIA_ATTACKS", "all_attacks", "mia_entropy", "mia_loss_lr", "mia_loss_threshold", "mia_svc_efficacy",
    "entropy", "per_sample_loss", "softmax_outputs", "true_class_confidence",
    "PredictionDistribution", "plot_prediction_distribution", "prediction_distribution",
    "RelearnResult", "anamnesis_index", "relearn_time",
    "layer_distances", "plot_layer_distances", "total_distance", "weight_distance",
]
