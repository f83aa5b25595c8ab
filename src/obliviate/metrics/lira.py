"""Per-example membership inference for sample deletion: LiRA (Carlini et al. 2022) against the deleted samples.

The population attacks of ``mia`` ask whether D_f looks unseen *on average*; a method can pass them while
single deleted samples stay recognisable (Hayes et al. 2024). LiRA calibrates each sample on its own:
K shadow models are trained with obliviate's trainer and the original's recipe on random halves of the
population (training split + test split), so every sample is IN for K//2 shadows and OUT for the rest.
Per sample, Gaussians are fit to the logit-scaled confidence φ of its IN and of its OUT shadows; a target
model's φ is scored by the log-likelihood ratio. The deleted samples' scores are compared with those of
unseen test samples of the same classes: a model that never saw D_f gives AUC ≈ 0.5.

Shadows are the cost, so their φ on every population sample is cached on disk under a content key of
(data, recipe without its seed, epoch cap, K, seed): every method, run seed and ``evaluate`` call on the
same data reuses them. See ``docs/metrics.md`` ("Per-example membership inference").
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..data.dataset import ArrayData, DataBundle, concat
from ..data.pipeline import predict
from ..data.sources import cache_dir
from ..errors import ObliviateError
from ..io import config_hash, write_json, write_npy
from ..params import check_fields, param
from ..training import TrainConfig, train
from .mia import MAX_PER_SIDE, MIN_PER_SIDE
from .outputs import logits_of, subsample

MIN_SHADOWS = 4  # two IN and two OUT shadows per sample: the least that gives a within-sample variance
TARGET_FPR = 0.01  # the low-FPR operating point reported beside the AUC (Carlini et al.'s argument)
RETAIN_REFERENCE = 1000  # retained samples scored for the reference AUC (seeded draw)
SHADOW_FOLDER = "shadows"  # under OBLIVIATE_CACHE when no cache folder is given


@dataclass(frozen=True)
class PerExampleMIA:
    """The attack's settings: ``shadows`` = K, the original's training ``recipe`` (shadows train with it, in
    plain mode, ``max_epochs`` capping its epochs), the ``seed`` of the halves and shadow training, and the
    ``cache`` folder for the shadows (default ``$OBLIVIATE_CACHE/shadows``); ``build`` makes a fresh model
    for a user's own class (the recipe names the class, so the cache key tells models apart)."""

    shadows: int = param(ge=MIN_SHADOWS)
    recipe: TrainConfig = param()
    max_epochs: int | None = param(None, ge=1)
    seed: int = param(0, ge=0)
    cache: str | Path | None = None
    build: Callable[[], torch.nn.Module] | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, TrainConfig):
            raise ObliviateError(f"per-example MIA: recipe must be a TrainConfig, got {type(self.recipe).__name__}")
        if isinstance(self.shadows, int) and not isinstance(self.shadows, bool) and self.shadows < MIN_SHADOWS:
            raise ObliviateError(f"per-example MIA needs K >= {MIN_SHADOWS} shadow models (two IN and two OUT per "
                                 f"sample to fit its Gaussians), got K={self.shadows}")
        check_fields(self, "per-example MIA")

    def shadow_recipe(self) -> TrainConfig:
        """The recipe shadows train with: plain training (a block recipe trains each sample
        ``epochs_per_block`` epochs), no snapshots, epochs capped; the seed is set per shadow. Block-only
        fields are reset, so a block recipe and a plain one that train the same way share one shadow set."""
        r = self.recipe
        epochs = r.epochs_per_block if r.blocks else r.epochs
        if self.max_epochs is not None:
            epochs = min(epochs, self.max_epochs)
        plain = TrainConfig()
        return dataclasses.replace(r, epochs=epochs, blocks=0, epochs_per_block=plain.epochs_per_block,
                                   block_schedule=plain.block_schedule, snapshot_every=0, seed=0)

    def key(self, data: DataBundle) -> str:
        return config_hash({"data": data.source_hash, "spec": data.spec, "recipe": self.shadow_recipe().to_dict(),
                            "shadows": self.shadows, "seed": self.seed})

    def folder(self, data: DataBundle) -> Path:
        return Path(self.cache if self.cache is not None else cache_dir() / SHADOW_FOLDER) / self.key(data)


def logit_confidence(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """φ = log(p_y / (1 − p_y)) = z_y − logsumexp_{c≠y} z_c, computed from the logits (no saturation)."""
    z = logits.double().cpu()
    y = y.cpu().long()
    true = z.gather(1, y[:, None])[:, 0]
    others = z.scatter(1, y[:, None], float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).numpy()


def membership(shadows: int, n: int, seed: int) -> np.ndarray:
    """(K, n) bool: each sample IN for exactly K//2 shadows, which ones drawn per sample (Carlini et al.'s
    ``keep``), so every sample has IN and OUT models however K is split."""
    rng = np.random.default_rng([seed, 0x11BA])
    order = rng.random((shadows, n)).argsort(axis=0)
    return order < shadows // 2


def population(data: DataBundle) -> ArrayData:
    """Training split then test split, with positions as ids (the two splits' source ids may overlap)."""
    both = concat(data.train, data.test)
    return ArrayData(both.x, both.y, torch.arange(len(both)))


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """Training a shadow reseeds the global generators; ``evaluate``'s seeded sections must not notice
    whether the shadows were cached or trained just now."""
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
        if state[3] is not None:
            torch.cuda.set_rng_state_all(state[3])


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One process trains a shadow set; another asking for it waits, then reads what it left."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class ShadowSet:
    """K shadows' φ on every population sample and who trained on what: all the attack needs of them."""

    key: str
    keep: np.ndarray  # (K, N) bool: shadow k trained on population sample n
    phi: np.ndarray  # (K, N) float: φ of shadow k on sample n
    n_train: int  # population positions [0, n_train) are the training split, the rest the test split

    def __post_init__(self) -> None:
        k, n = self.keep.shape
        n_in = int(self.keep[:, 0].sum())
        cols = self.phi.T
        self.phi_in = cols[self.keep.T].reshape(n, n_in)  # each column has exactly n_in IN shadows
        self.phi_out = cols[~self.keep.T].reshape(n, k - n_in)
        # one variance per side, pooled over samples: K/2 values per sample fit a mean, not a variance
        # (Carlini et al.'s "fixed variance", which they advise below 64 shadows)
        self.sd_in = float(np.sqrt(self.phi_in.var(axis=1, ddof=1).mean()))
        self.sd_out = float(np.sqrt(self.phi_out.var(axis=1, ddof=1).mean()))

    def scores(self, phi: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Log-likelihood ratio log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out) of each target φ at population
        positions ``pos``; higher means the target model behaves as if it trained on the sample."""
        mu_in, mu_out = self.phi_in[pos].mean(axis=1), self.phi_out[pos].mean(axis=1)
        sd_in, sd_out = max(self.sd_in, 1e-12), max(self.sd_out, 1e-12)
        log_in = -0.5 * ((phi - mu_in) / sd_in) ** 2 - np.log(sd_in)
        log_out = -0.5 * ((phi - mu_out) / sd_out) ** 2 - np.log(sd_out)
        return log_in - log_out


def shadow_set(cfg: PerExampleMIA, data: DataBundle, device: torch.device | str = "cpu") -> ShadowSet:
    """The cached shadow set of ``cfg`` on ``data``, training the shadows it lacks (a killed run resumes
    at the next unfinished shadow)."""
    folder = cfg.folder(data)
    pop = population(data)
    keep = membership(cfg.shadows, len(pop), cfg.seed)
    with _locked(folder):
        if not (folder / "shadows.json").exists():
            write_json(folder / "shadows.json", {"shadows": cfg.shadows, "seed": cfg.seed, "data": data.describe(),
                                                 "recipe": cfg.shadow_recipe().to_dict(), "population": len(pop),
                                                 "train_size": len(data.train), "test_size": len(data.test)})
            write_npy(folder / "keep.npy", keep)
        rows = [_shadow_phi(cfg, data, pop, keep, k, folder, device) for k in range(cfg.shadows)]
    return ShadowSet(cfg.key(data), keep, np.stack(rows), len(data.train))


def _shadow_phi(cfg: PerExampleMIA, data: DataBundle, pop: ArrayData, keep: np.ndarray, k: int, folder: Path,
                device) -> np.ndarray:
    """φ of shadow k on the population: read from the cache, or trained on its half now and cached."""
    path = folder / f"phi-{k:03d}.npy"
    if path.exists():
        phi = np.load(path, allow_pickle=False)
        if phi.shape == (len(pop),):
            return phi
    bundle = DataBundle(data.name, pop, data.val, data.test, data.classes, data.kind, data.mean, data.std,
                        data.source_hash, {**data.spec, "lira_population": True})
    recipe = dataclasses.replace(cfg.shadow_recipe(), seed=cfg.seed * 10_007 + k + 1)
    with _rng_kept():
        model = train(bundle, recipe, device=device, exclude_ids=np.flatnonzero(~keep[k]), kind="shadow",
                      build=cfg.build).model
    phi = logit_confidence(predict(model, pop.x), pop.y)
    write_npy(path, phi)
    return phi


def _positions(train_ids: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """Positions in the training split (= population positions) of the samples with these ids."""
    all_ids = train_ids.cpu().numpy()
    order = np.argsort(all_ids, kind="stable")
    return order[np.searchsorted(all_ids, ids.cpu().numpy(), sorter=order)]


@dataclass
class Targets:
    """Population positions of the samples a target model is scored on."""

    deleted: np.ndarray  # D_f (a seeded draw of at most MAX_PER_SIDE)
    unseen: np.ndarray  # test samples of D_f's classes: never trained on by any target model
    retained: np.ndarray  # a seeded draw of D_r: what a member still looks like to this attack


def target_samples(data: DataBundle, forget: ArrayData, retain: ArrayData, seed: int) -> Targets:
    rng = np.random.default_rng([seed, 0x11BA])
    deleted = subsample(forget, MAX_PER_SIDE, rng)
    test_pos = np.flatnonzero(torch.isin(data.test.y.cpu(), torch.unique(forget.y.cpu())).numpy())
    if len(test_pos) > MAX_PER_SIDE:
        test_pos = np.sort(rng.choice(test_pos, MAX_PER_SIDE, replace=False))
    retained = subsample(retain, RETAIN_REFERENCE, rng)
    return Targets(_positions(data.train.ids, deleted.ids), len(data.train) + test_pos,
                   _positions(data.train.ids, retained.ids))


def target_phi(model: torch.nn.Module, data: DataBundle) -> np.ndarray:
    """φ of ``model`` on every population sample (from ``evaluate``'s logit cache when it is active)."""
    return np.concatenate([logit_confidence(logits_of(model, part), part.y) for part in (data.train, data.test)])


def attack_roc(members: np.ndarray, nonmembers: np.ndarray) -> tuple[float, float]:
    """(AUC, TPR at ``TARGET_FPR``) of telling ``members`` from ``nonmembers`` by score; NaN when a side has
    fewer than ``MIN_PER_SIDE`` samples."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(members) < MIN_PER_SIDE or len(nonmembers) < MIN_PER_SIDE:
        return float("nan"), float("nan")
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    s = np.concatenate([members, nonmembers])
    fpr, tpr, _ = roc_curve(y, s)
    return float(roc_auc_score(y, s)), float(tpr[fpr <= TARGET_FPR].max())


def deletion_test(shadows: ShadowSet, phi: np.ndarray, t: Targets, original_phi: np.ndarray | None = None) -> dict:
    """Rank tests of the deleted samples' scores, for the verdict (``verdict``, "per-example attack").

    ``p_seen``: one-sided Mann–Whitney p that they score *above* unseen samples (small: still seen).
    ``p_kept``: that they score *below* the retained samples, the model's members (small: it treats them
    unlike what it kept; the attack must see membership on this model for that to happen). ``p_kept_original``:
    the same for the original's φ (the model that trained on them): small there means the samples scored low
    before any deletion (a request chosen by a property, e.g. samples the model never fit), so a small
    ``p_kept`` could not show removal.
    A p is None with fewer than one deleted or ``MIN_PER_SIDE`` reference samples."""
    from scipy.stats import mannwhitneyu

    def score(values: np.ndarray) -> dict:
        return {name: shadows.scores(values[pos], pos) for name, pos in dataclasses.asdict(t).items()}

    def p(a: np.ndarray, b: np.ndarray, side: str) -> float | None:
        if len(a) < 1 or len(b) < MIN_PER_SIDE:
            return None
        return float(mannwhitneyu(a, b, alternative=side).pvalue)

    s = score(phi)
    before = score(original_phi) if original_phi is not None else None
    auc = attack_roc(s["deleted"], s["unseen"])[0]
    return {"deleted": len(t.deleted), "unseen": len(t.unseen), "retained": len(t.retained),
            "auc": None if np.isnan(auc) else auc, "p_seen": p(s["deleted"], s["unseen"], "greater"),
            "p_kept": p(s["deleted"], s["retained"], "less"),
            "p_kept_original": p(before["deleted"], before["retained"], "less") if before else None}


def per_example_metrics(models: dict, data: DataBundle, forget: ArrayData, retain: ArrayData, cfg: PerExampleMIA,
                        seed: int = 0) -> dict:
    """``lira_*`` keys for each model of ``models`` (suffix -> model or None; see docs/metrics.md)."""
    device = next(next(m for m in models.values() if m is not None).parameters()).device
    shadows = shadow_set(cfg, data, device)
    t = target_samples(data, forget, retain, seed)
    m: dict = {"lira_shadows": cfg.shadows, "lira_shadow_epochs": cfg.shadow_recipe().epochs,
               "lira_shadow_key": shadows.key, "lira_deleted": len(t.deleted), "lira_unseen": len(t.unseen)}
    for suffix, model in models.items():
        keys = [k + suffix for k in ("lira_auc", "lira_tpr_at_1fpr", "lira_retain_auc")]
        if model is None:
            m.update(dict.fromkeys(keys, None))
            continue
        phi = target_phi(model, data)
        score = {name: shadows.scores(phi[pos], pos) for name, pos in dataclasses.asdict(t).items()}
        auc, tpr = attack_roc(score["deleted"], score["unseen"])
        m.update(zip(keys, (auc, tpr, attack_roc(score["retained"], score["unseen"])[0])))
    return m
