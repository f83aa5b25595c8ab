"""``evaluate``: every metric for one unlearned model, as one flat dict (and ``metrics.json`` + figures).

The dict is flat so that a benchmark table is one row per run and a key means the same thing
everywhere. Naming: a key without suffix describes the unlearned model; ``_original`` and
``_retrained`` suffixes give the same quantity for θ₀ and for the model retrained without D_f (the
gold standard); ``_gap`` is |unlearned − retrained|. Values that do not apply (no retrained model, no
GPU, a sample request has no test-forget split) are None (``null`` in JSON), never a made-up number.
Every key is defined in ``docs/metrics.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.dataset import ArrayData, DataBundle
from ..data.request import ForgetRequest, Forgotten
from ..errors import ObliviateError
from ..finite import require_finite, require_finite_outputs
from ..io import write_json
from ..models.foreign import adopt
from .accuracy import accuracy, per_class_accuracy
from .backdoor import backdoor_asr, backdoor_info
from .cost import cost_metrics
from .divergence import activation_distance, mean_js, random_init_like, zrf_score
from .gradcam import plot_gradcam_grid
from .lira import PerExampleMIA, per_example_metrics
from .mia import MIA_ATTACKS, all_attacks
from .outputs import cached_outputs, logits_of, part_of
from .predictions import plot_prediction_distribution, prediction_distribution
from .relearn import anamnesis_index, relearn_time
from .weights import layer_distances, plot_layer_distances, total_distance

METRICS_FILE = "metrics.json"
FIGURES = {"weights": "weight_distance.png", "predictions": "forget_predictions.png", "gradcam": "gradcam.png"}

# The keys ``evaluate`` always writes (None where not applicable); see docs/metrics.md.
CORE_KEYS = (
    "forget_acc", "retain_acc", "test_acc", "test_forget_acc", "test_retain_acc", "per_class_test_acc",
    *MIA_ATTACKS, *(f"{k}_gap" for k in MIA_ATTACKS),
    "relearn_steps", "relearn_capped", "relearn_steps_retrained", "relearn_ain",
    "js_to_retrained", "activation_distance", "zrf",
    "weight_distance", "weight_distance_to_retrained",
    "pred_counts", "pred_entropy_retained", "pred_max_share_retained", "pred_forgotten_share",
    "seconds", "speedup_vs_retrain", "speedup_vs_fast_retrain", "peak_gpu_memory_mb",
)


def _spec_tuple(model: torch.nn.Module) -> tuple:
    spec = getattr(model, "spec", None)
    if spec is None:
        return (type(model).__name__,)
    return (spec.name, tuple(spec.input_shape), int(spec.num_classes), tuple(sorted(spec.options.items())))


def check_compatible(data: DataBundle, **models: torch.nn.Module | None) -> None:
    """Refuse to compare models of different architectures or models that do not fit ``data``."""
    named = {k: m for k, m in models.items() if m is not None}
    for name, m in named.items():
        spec = getattr(m, "spec", None)
        if spec is not None and (tuple(spec.input_shape) != tuple(data.input_shape)
                                 or int(spec.num_classes) != data.num_classes):
            raise ObliviateError(f"the {name} model expects input {tuple(spec.input_shape)} with {spec.num_classes} "
                                 f"classes, data set {data.name!r} has {data.input_shape} with {data.num_classes}")
    ref_name, ref = next(iter(named.items()))
    for name, m in named.items():
        if _spec_tuple(m) != _spec_tuple(ref):
            raise ObliviateError(f"the {name} model ({_spec_tuple(m)[0]}) and the {ref_name} model "
                                 f"({_spec_tuple(ref)[0]}) differ in architecture; compare models of one kind")


def check_finite(data: DataBundle, **models: torch.nn.Module | None) -> None:
    """Refuse models with NaN/inf weights or outputs: every metric of such a model is garbage (or a crash in
    scikit-learn). Run inside ``cached_outputs``, the forward passes are the ones the metrics reuse."""
    hint = "it cannot be evaluated; redo its training or unlearning with a lower learning rate"
    for name, m in models.items():
        if m is None:
            continue
        require_finite(m, f"the {name} model", hint)
        for part, on in ((data.train, "training"), (data.test, "test")):
            if len(part):
                require_finite_outputs(logits_of(m, part), f"the {name} model", on, hint)


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def evaluate(original: torch.nn.Module, unlearned: torch.nn.Module, data: DataBundle, request: ForgetRequest,
             retrained: torch.nn.Module | None = None, unlearn_record: dict | None = None,
             retrain_record: dict | None = None, out: str | Path | None = None, figures: bool = True,
             seed: int = 0, relearn: bool = True, earlier: list[ForgetRequest] | None = None,
             per_example_mia: PerExampleMIA | None = None) -> dict:
    """All metrics of ``unlearned`` (made from ``original`` by forgetting ``request``) as one flat dict.

    ``retrained`` (θ₀'s recipe trained without D_f) enables the gaps, JS/activation distance, AIN and
    the distance to the retrained weights; ``unlearn_record`` / ``retrain_record`` (from ``unlearn`` and
    ``train``) give the cost. With ``out``, ``metrics.json`` is written atomically and, unless
    ``figures=False``, the PNGs (layer-wise weight distance, D_f prediction histogram, GradCAM grid for
    convolutional models). ``seed`` fixes every subsample, the attacks' CV splits, the relearn batches
    and ZRF's random model; ``relearn=False`` skips the relearn fine-tuning (the slowest part).
    ``earlier``: the requests ``unlearned`` had forgotten before ``request`` (its lineage, oldest first):
    D_f is then what ``request`` added, D_r and the retained test split exclude all of them, and the
    ``earlier_*`` keys say whether each earlier set is still forgotten. ``per_example_mia`` (sample requests
    only) adds the ``lira_*`` keys: LiRA against the deleted samples, from cached shadow models.
    """
    if per_example_mia is not None and request.kind == "class":
        raise ObliviateError(f"the per-example attack is for sample requests (ids or a fraction); {request.describe()} "
                             "is a class request: judge it with the class metrics")
    original, data = adopt(original, data)  # a user's own modules and tensors are taken as they are
    unlearned, retrained = (adopt(m, data)[0] if m is not None else None for m in (unlearned, retrained))
    check_compatible(data, original=original, unlearned=unlearned, retrained=retrained)
    with cached_outputs(original, unlearned, retrained):
        check_finite(data, original=original, unlearned=unlearned, retrained=retrained)
        return _evaluate(original, unlearned, data, request, retrained, unlearn_record, retrain_record, out, figures,
                         seed, relearn, list(earlier or []), per_example_mia)


def _still_forgotten(original, unlearned, data: DataBundle, earlier: list[ForgetRequest]) -> dict:
    """Per earlier request of a lineage: accuracy on its training samples (and its classes' test samples)."""
    out = {"earlier_requests": [], "earlier_forget_acc": [], "earlier_forget_acc_original": [],
           "earlier_test_forget_acc": []}
    for r in earlier:
        pos = r.resolve(data.train, data.num_classes).forget_pos
        out["earlier_requests"].append(r.describe())
        out["earlier_forget_acc"].append(accuracy(unlearned, part_of(data.train, pos)))
        out["earlier_forget_acc_original"].append(accuracy(original, part_of(data.train, pos)))
        test_pos = torch.nonzero(torch.isin(data.test.y.cpu(), torch.as_tensor(r.classes, dtype=torch.long))).flatten()
        out["earlier_test_forget_acc"].append(accuracy(unlearned, part_of(data.test, test_pos)) if r.classes else None)
    return out


@dataclass
class _Parts:
    """The sets every metric reads: D_f, D_r, and the test split by forgotten classes."""

    prior: Forgotten
    forget: ArrayData
    retain: ArrayData
    test_forget: ArrayData | None
    test_retain: ArrayData
    unseen_same: ArrayData | None  # non-members of D_f's distribution for the loss attack


def _parts(data: DataBundle, request: ForgetRequest, earlier: list[ForgetRequest]) -> _Parts:
    prior = Forgotten()
    for r in earlier:
        prior = prior.union(Forgotten.of(r, data.train, data.num_classes))
    split = request.resolve(data.train, data.num_classes, prior)
    forget, retain = part_of(data.train, split.forget_pos), part_of(data.train, split.retain_pos)
    test_forget, test_retain = None, data.test
    gone = torch.isin(data.test.y.cpu(), torch.as_tensor(request.classes + prior.classes, dtype=torch.long))
    if request.classes:  # the test samples of the forgotten classes, and of the others
        in_forgotten = torch.isin(data.test.y, torch.as_tensor(request.classes, device=data.test.y.device)).cpu()
        test_forget = part_of(data.test, torch.nonzero(in_forgotten).flatten())
    if gone.any():
        test_retain = part_of(data.test, torch.nonzero(~gone).flatten())
    unseen_same = test_forget if request.classes else test_retain
    return _Parts(prior, forget, retain, test_forget, test_retain, unseen_same)


def _evaluate(original, unlearned, data, request, retrained, unlearn_record, retrain_record, out, figures, seed,
              relearn, earlier, per_example_mia=None) -> dict:
    """Every metric section in turn (the order is fixed: a seeded section must see the same state)."""
    parts = _parts(data, request, earlier)
    models = {"": unlearned, "_original": original, "_retrained": retrained}
    m: dict = {
        "request": request.describe(), "request_kind": request.kind,
        "method": (unlearn_record or {}).get("method"), "forget_size": len(parts.forget),
        "retain_size": len(parts.retain), "test_size": len(data.test), "seed": seed,
    }
    m.update(_accuracy_metrics(models, parts, data))
    if earlier:
        m["forgotten_before"] = parts.prior.describe()
        m.update(_still_forgotten(original, unlearned, data, earlier))
    m.update(_mia_metrics(models, parts, seed))
    m.update(_relearn_metrics(original, unlearned, retrained, parts.forget, seed, relearn))
    m.update(_output_distances(models, parts.forget, seed))
    d_orig = layer_distances(unlearned, original)
    d_retr = layer_distances(unlearned, retrained) if retrained is not None else None
    m["weight_distance"] = total_distance(d_orig)
    m["weight_distance_to_retrained"] = total_distance(d_retr) if d_retr is not None else None
    m["weight_distance_retrained_to_original"] = (total_distance(layer_distances(retrained, original))
                                                  if retrained is not None else None)
    dists = _prediction_metrics(m, unlearned, retrained, parts.forget, data, request)
    bd = backdoor_info(data)  # backdoor verification (only for data made with plant_backdoor)
    if bd is not None:
        for suffix, model in models.items():
            m["backdoor_asr" + suffix] = (backdoor_asr(model, data.test, bd["target"], bd["patch"])
                                          if model is not None else None)
    m.update(cost_metrics(unlearn_record, retrain_record))
    if per_example_mia is not None:  # last: it may train shadows (RNG state is kept, but keep it out of the way)
        m.update(per_example_metrics(models, data, parts.forget, parts.retain, per_example_mia, seed))
    m = {k: _clean(v) for k, v in m.items()}
    if out is not None:
        out = Path(out)
        m["figures"] = _figures(out, original, unlearned, parts, data, request, d_orig, d_retr, dists, seed) \
            if figures else []
        write_json(out / METRICS_FILE, m)
    return m


def _accuracy_metrics(models: dict, parts: _Parts, data: DataBundle) -> dict:
    m = {}
    for suffix, model in models.items():
        for key, part in (("forget_acc", parts.forget), ("retain_acc", parts.retain), ("test_acc", data.test),
                          ("test_forget_acc", parts.test_forget), ("test_retain_acc", parts.test_retain)):
            m[key + suffix] = accuracy(model, part) if model is not None else None
    m["per_class_test_acc"] = per_class_accuracy(models[""], data.test, data.num_classes)
    return m


def _mia_metrics(models: dict, parts: _Parts, seed: int) -> dict:
    m = {}
    for suffix, model in models.items():
        if model is None:
            continue
        for key, v in all_attacks(model, parts.forget, parts.retain, parts.unseen_same, parts.test_retain,
                                  seed=seed).items():
            m[key + suffix] = v
    retrained = models["_retrained"]
    for key in MIA_ATTACKS:
        m[key + "_gap"] = abs(m[key] - m[key + "_retrained"]) if retrained is not None else None
        if retrained is None:
            m[key + "_retrained"] = None
    return m


def _relearn_metrics(original, unlearned, retrained, forget: ArrayData, seed: int, relearn: bool) -> dict:
    """Relearn time and the anamnesis index (None when ``relearn`` is off: the slowest part)."""
    m = {"relearn_steps": None, "relearn_capped": None, "relearn_steps_retrained": None,
         "relearn_retrained_capped": None, "relearn_ain": None, "relearn_goal": None}
    if relearn:
        ru = relearn_time(unlearned, forget, original, seed=seed)
        m.update(relearn_steps=ru.steps, relearn_capped=ru.capped, relearn_goal=ru.goal)
        if retrained is not None:
            rr = relearn_time(retrained, forget, original, seed=seed)
            m.update(relearn_steps_retrained=rr.steps, relearn_retrained_capped=rr.capped,
                     relearn_ain=anamnesis_index(ru, rr))
    return m


def _output_distances(models: dict, forget: ArrayData, seed: int) -> dict:
    """Output-space distances on D_f: JS and activation distance to the retrained model, ZRF."""
    unlearned, retrained = models[""], models["_retrained"]
    m = {"js_to_retrained": mean_js(unlearned, retrained, forget) if retrained is not None else None,
         "activation_distance": activation_distance(unlearned, retrained, forget) if retrained is not None else None}
    rand = random_init_like(unlearned, seed)
    for suffix, model in models.items():
        m["zrf" + suffix] = zrf_score(model, forget, reference=rand) if model is not None else None
    return m


def _prediction_metrics(m: dict, unlearned, retrained, forget: ArrayData, data: DataBundle,
                        request: ForgetRequest) -> dict:
    """Where D_f's predictions go (into ``m``); returns the distributions for the figure."""
    dists = {}
    for suffix, model in (("", unlearned), ("_retrained", retrained)):
        if model is None:
            for k in ("pred_counts", "pred_entropy_retained", "pred_max_share_retained", "pred_forgotten_share"):
                m[k + suffix] = None
            continue
        d = dists[suffix] = prediction_distribution(model, forget, data.num_classes, request.classes)
        m.update({"pred_counts" + suffix: d.counts, "pred_entropy_retained" + suffix: d.entropy_retained,
                  "pred_max_share_retained" + suffix: d.max_share_retained,
                  "pred_forgotten_share" + suffix: d.forgotten_share})
    return dists


def _figures(out: Path, original, unlearned, parts: _Parts, data: DataBundle, request: ForgetRequest, d_orig,
             d_retr, dists: dict, seed: int) -> list[str]:
    written = [plot_layer_distances(d_orig, d_retr, out / FIGURES["weights"]).name,
               plot_prediction_distribution(dists[""], data.classes, out / FIGURES["predictions"],
                                            request.classes, dists.get("_retrained")).name]
    if data.kind == "image" and getattr(unlearned, "cam_layer", None):
        written.append(plot_gradcam_grid(original, unlearned, parts.forget, parts.retain, out / FIGURES["gradcam"],
                                         seed=seed, class_names=data.classes).name)
    return written
