"""PyKEEN models as baselines of ``imf-kg compare``: trained by PyKEEN, selected and tested by our evaluator.

Data. The baseline sees exactly the toolkit's split: :func:`triples_factories` turns ``kg.train/valid/test``
(original relations only) into PyKEEN ``TriplesFactory`` objects with ``kg``'s entity and relation id maps, so
PyKEEN's ids are ours. Where a recipe trains with inverse relations, PyKEEN adds them itself
(``create_inverse_triples=True``; its internal inverse ids are not ours and never leave PyKEEN).

Training. PyKEEN's own training loops (LCWA = 1-N "KvsAll", or sLCWA = negative sampling) and losses, with
the experiment's optimiser settings (Adam, learning rate, weight decay, exponential decay, batch size,
label smoothing for LCWA) and the same epoch or wall-clock budget as the IMF methods. Model selection is on
validation with OUR filtered evaluator, through a PyKEEN ``Stopper`` (:class:`ValidationStopper`): every
``eval_every`` epochs (and at the last one) it ranks the validation split, keeps the best parameters, stops
after ``patience`` evaluations without improvement or at the deadline. The best parameters are loaded before
the single test evaluation.

Scoring. :class:`PykeenLinkPredictor` presents a trained PyKEEN model as a
:class:`~imf_kg.models.base.LinkPredictor`: a tail query ``(h, r)`` is scored with ``model.predict_t``; an
inverse query ``(t, r + R)`` of our evaluator, i.e. the head query ``(?, r, t)``, is scored the way PyKEEN
scores heads, ``model.predict_h`` on ``(r, t)`` (``score_h``, or PyKEEN's own inverse relation when it trained
with inverses), never through our inverse relation ids.

Recipes (:data:`RECIPES`; sizes follow the config so that parameter counts are comparable):

    TuckER    LCWA + inverses, BCE after sigmoid (PyKEEN's default), d_e = entity_dim, d_r = relation_dim,
              the config's scorer dropouts and batch norm: the same scorer as our "structure" method
    ComplEx   LCWA + inverses, BCE with logits, entity_dim / 2 complex coordinates (entity_dim real numbers),
              Xavier-normal initialisation (PyKEEN's N(0, 1) default did not train under 1-N BCE, see below)
    DistMult  LCWA + inverses, BCE with logits, d = entity_dim
    RotatE    sLCWA, self-adversarial negative sampling loss (PyKEEN's default), 32 negatives per positive,
              entity_dim / 2 complex coordinates
    TransE    sLCWA, margin ranking loss (PyKEEN's default), 32 negatives per positive, d = entity_dim
    other     sLCWA with the model's default loss, 32 negatives, embedding_dim = entity_dim when it has one
"""

from __future__ import annotations

import copy
import gc
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from pykeen.stoppers import Stopper

from imf_kg.errors import ConfigError
from imf_kg.models.base import LinkPredictor
from imf_kg.training import EarlyStopping, flatten_link_prediction_metrics, seed_everything

NEGATIVES_PER_POSITIVE = 32


@dataclass(frozen=True)
class Recipe:
    """How one PyKEEN model is trained: loop (``"lcwa"``/``"slcwa"``), inverse triples, loss, model kwargs."""

    loop: str
    inverse_triples: bool
    loss: str | None
    model_kwargs: Callable[[Any], dict] = field(default=lambda model_cfg: {})


def _complex_dim(model_cfg) -> dict:
    return {"embedding_dim": max(1, model_cfg.entity_dim // 2)}


def _complex_xavier(model_cfg) -> dict:
    # PyKEEN's ComplEx starts from N(0, 1) (Trouillon et al.'s negative-sampling setting): under 1-N BCE with
    # Adam the logits start huge and UMLS valid MRR was still 0.06 (random) after 10 epochs at lr 0.006;
    # Xavier-normal (as TuckER and our models) reached 0.41.
    return {**_complex_dim(model_cfg), "entity_initializer": "xavier_normal_", "relation_initializer": "xavier_normal_"}


RECIPES: dict[str, Recipe] = {
    "tucker": Recipe("lcwa", True, None, lambda c: {
        "embedding_dim": c.entity_dim, "relation_dim": c.relation_dim, "dropout_0": c.scorer_dropouts[0],
        "dropout_1": c.scorer_dropouts[1], "dropout_2": c.scorer_dropouts[2],
        "apply_batch_normalization": c.batch_norm}),
    "complex": Recipe("lcwa", True, "BCEWithLogitsLoss", _complex_xavier),
    "distmult": Recipe("lcwa", True, "BCEWithLogitsLoss", lambda c: {"embedding_dim": c.entity_dim}),
    "rotate": Recipe("slcwa", False, None, _complex_dim),
    "transe": Recipe("slcwa", False, None, lambda c: {"embedding_dim": c.entity_dim}),
}


def resolve_pykeen_model(name: str):
    """The PyKEEN model class called ``name`` (any case); unknown names raise a one-line ConfigError."""
    from pykeen.models import model_resolver

    try:
        return model_resolver.lookup(name)
    except (KeyError, ValueError):
        known = ", ".join(sorted(cls.__name__ for cls in model_resolver))
        raise ConfigError(f"unknown PyKEEN model {name!r}; expected one of {known}") from None


def recipe_for(name: str) -> Recipe:
    cls = resolve_pykeen_model(name)
    recipe = RECIPES.get(cls.__name__.lower())
    if recipe is not None:
        return recipe
    accepts_dim = "embedding_dim" in inspect.signature(cls.__init__).parameters
    return Recipe("slcwa", False, None, (lambda c: {"embedding_dim": c.entity_dim}) if accepts_dim else (lambda c: {}))


# ------------------------------------------------------------------------------------------------ data
def triples_factories(kg, create_inverse_triples: bool = False) -> dict:
    """PyKEEN ``TriplesFactory`` objects for ``kg``'s splits, with ``kg``'s id maps (PyKEEN id = our id).

    Returns ``{"train": ..., "valid": ..., "test": ...}``; only original relations are given to PyKEEN.
    """
    from pykeen.triples import TriplesFactory

    return {
        split: TriplesFactory(mapped_triples=kg.split(split).long(), entity_to_id=dict(kg.entity_to_id),
                              relation_to_id=dict(kg.relation_to_id), create_inverse_triples=create_inverse_triples)
        for split in ("train", "valid", "test")
    }


# --------------------------------------------------------------------------------------------- scoring
class PykeenLinkPredictor(LinkPredictor):
    """A trained PyKEEN model behind the toolkit's 1-N interface (see the module docstring).

    Args:
        model: a PyKEEN model over ``num_entities`` entities and the ``num_relations`` original relations.
        num_relations: ``R``; relation ids ``>= R`` are our inverse ids, i.e. head queries.
    """

    def __init__(self, model, num_relations: int):
        super().__init__()
        self.model = model
        self.num_entities = int(model.num_entities)
        self.num_relations = int(num_relations)

    def score_tails(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, N)``: ``predict_t((h, r))`` for ``r < R``; ``predict_h((r - R, h))`` otherwise (the
        query entity of an inverse query is the tail of ``(?, r, t)``)."""
        device = self.model.device
        heads, relations = heads.to(device), relations.to(device)
        is_tail_query = relations < self.num_relations
        scores = torch.empty(len(heads), self.num_entities, device=device)
        if bool(is_tail_query.any()):
            hr = torch.stack([heads[is_tail_query], relations[is_tail_query]], dim=1)
            scores[is_tail_query] = self.model.predict_t(hr).float()
        if not bool(is_tail_query.all()):
            head_query = ~is_tail_query
            rt = torch.stack([relations[head_query] - self.num_relations, heads[head_query]], dim=1)
            scores[head_query] = self.model.predict_h(rt).float()
        return scores


# ------------------------------------------------------------------------------------------ selection
class ValidationStopper(Stopper):
    """PyKEEN ``Stopper`` selecting on OUR filtered validation ranking (see the module docstring).

    Args:
        kg: the knowledge graph.
        predictor: the :class:`PykeenLinkPredictor` wrapping the model being trained.
        num_epochs: the training loop's epoch count (the last epoch is always validated).
        eval_every / patience / metric / mode: as in :class:`~imf_kg.training.TrainConfig`.
        deadline: an object with ``passed() -> bool`` (:class:`~imf_kg.comparison.budget.Deadline`) or None.
        eval_batch_size: queries per evaluation batch.
    """

    def __init__(self, kg, predictor: PykeenLinkPredictor, num_epochs: int, eval_every: int = 1,
                 patience: int | None = None, metric: str = "mrr", mode: str = "max", deadline=None,
                 eval_batch_size: int = 256):
        super().__init__()
        self.kg, self.predictor = kg, predictor
        self.num_epochs, self.eval_every, self.metric = num_epochs, max(1, int(eval_every)), metric
        self.deadline = deadline
        self.eval_batch_size = eval_batch_size
        self.early_stopping = EarlyStopping(mode, patience)
        self.best_state: dict | None = None
        self.history: list[dict] = []
        self.stopped = False
        self.out_of_time = False

    def should_evaluate(self, epoch: int) -> bool:
        timed_out = self.deadline is not None and self.deadline.passed()
        return epoch % self.eval_every == 0 or epoch == self.num_epochs or timed_out

    def should_stop(self, epoch: int) -> bool:
        from imf_kg.evaluation import evaluate_link_prediction

        start = time.perf_counter()
        result = evaluate_link_prediction(self.predictor, self.kg, split="valid", batch_size=self.eval_batch_size,
                                          progress=False)
        metrics = flatten_link_prediction_metrics(result)
        if self.metric not in metrics:
            raise ConfigError(f"train.metric: {self.metric!r} is not a validation metric; "
                              f"expected one of {', '.join(sorted(metrics))}")
        improved = self.early_stopping.update(epoch, metrics[self.metric], metrics)
        if improved:
            self.best_state = copy.deepcopy(self.predictor.model.state_dict())
        self.best_epoch = self.early_stopping.best_epoch
        self.history.append({"epoch": epoch, **{f"valid/{k}": v for k, v in metrics.items()},
                             "valid_time_s": time.perf_counter() - start, "is_best": improved})
        self.out_of_time = self.deadline is not None and self.deadline.passed() and epoch < self.num_epochs
        self.stopped = self.early_stopping.stopped or self.out_of_time
        return self.stopped

    def get_summary_dict(self) -> Mapping[str, Any]:
        return {"best_epoch": self.best_epoch, "metric": self.metric, "history": list(self.history),
                "stopped": self.stopped}


# ------------------------------------------------------------------------------------------- training
@dataclass
class BaselineRun:
    """A trained baseline: the wrapped model (best validation parameters loaded) and how it got there."""

    predictor: PykeenLinkPredictor
    best_epoch: int | None
    best_valid: dict
    epochs_run: int
    stopped_early: bool
    out_of_time: bool
    train_seconds: float
    history: list = field(default_factory=list)
    recipe: dict = field(default_factory=dict)


def train_pykeen_baseline(name: str, kg, cfg, seed: int, epochs: int, deadline=None, device="cpu",
                          checkpoint_dir=None, progress: bool = False) -> BaselineRun:
    """Train PyKEEN's ``name`` on ``kg``'s training split with ``cfg``'s (an
    :class:`~imf_kg.experiment.ExperimentConfig`) sizes and optimiser, select on validation; see the module
    docstring. ``epochs`` is the epoch budget (a cap when ``deadline`` is given)."""
    from pykeen.training import LCWATrainingLoop, SLCWATrainingLoop

    cls = resolve_pykeen_model(name)
    recipe = recipe_for(name)
    factories = triples_factories(kg, create_inverse_triples=recipe.inverse_triples)
    seed_everything(seed, cfg.train.deterministic)
    model_kwargs = dict(recipe.model_kwargs(cfg.model))
    if recipe.loss is not None:
        model_kwargs["loss"] = recipe.loss
    try:
        model = cls(triples_factory=factories["train"], random_seed=seed, **model_kwargs).to(device)
    except TypeError as err:
        raise ConfigError(f"PyKEEN model {cls.__name__} cannot be built from the config's sizes ({err})") from None
    optim = cfg.optim
    loop_kwargs = dict(model=model, triples_factory=factories["train"],
                       optimizer="AdamW" if optim.optimizer == "adamw" else "Adam",
                       optimizer_kwargs={"lr": optim.lr, "weight_decay": optim.weight_decay},
                       automatic_memory_optimization=False)
    if optim.lr_decay != 1.0:
        loop_kwargs.update(lr_scheduler="ExponentialLR", lr_scheduler_kwargs={"gamma": optim.lr_decay})
    if recipe.loop == "lcwa":
        loop = LCWATrainingLoop(**loop_kwargs)
        train_kwargs = {"label_smoothing": optim.label_smoothing}
    else:
        loop = SLCWATrainingLoop(negative_sampler="basic",
                                 negative_sampler_kwargs={"num_negs_per_pos": NEGATIVES_PER_POSITIVE}, **loop_kwargs)
        train_kwargs = {}
    predictor = PykeenLinkPredictor(model, kg.num_relations)
    train = cfg.train
    stopper = ValidationStopper(kg, predictor, epochs, train.eval_every, train.patience, train.metric, train.mode,
                                deadline, optim.eval_batch_size)
    if deadline is not None:
        deadline.start()
    # PyKEEN calls gc.collect() after every epoch, a full scan of every live object (torch, transformers, ...):
    # 1-2 s per epoch on the shared machine. Frozen objects are skipped, so only this run's garbage is scanned.
    gc.freeze()
    start = time.perf_counter()
    try:
        losses = loop.train(triples_factory=factories["train"], num_epochs=epochs, batch_size=optim.batch_size,
                            stopper=stopper, use_tqdm=progress, use_tqdm_batch=False,
                            checkpoint_directory=checkpoint_dir, pin_memory=torch.device(device).type == "cuda",
                            **train_kwargs)
    finally:
        seconds = time.perf_counter() - start
        gc.unfreeze()
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    model.eval()
    return BaselineRun(
        predictor=predictor, best_epoch=stopper.early_stopping.best_epoch,
        best_valid=dict(stopper.early_stopping.best_metrics), epochs_run=len(losses or []),
        stopped_early=stopper.early_stopping.stopped, out_of_time=stopper.out_of_time, train_seconds=seconds,
        history=_merge_history(losses or [], stopper.history),
        recipe={"model": cls.__name__, "loop": recipe.loop, "inverse_triples": recipe.inverse_triples,
                "loss": type(model.loss).__name__, **{k: v for k, v in model_kwargs.items() if k != "loss"},
                "num_parameters": int(model.num_parameters)},
    )


def _merge_history(losses, validations: list[dict]) -> list[dict]:
    """One record per epoch: ``{"epoch", "train_loss"}`` plus that epoch's validation metrics, if any."""
    records = [{"epoch": i + 1, "train_loss": float(loss)} for i, loss in enumerate(losses)]
    for validation in validations:
        if 1 <= validation["epoch"] <= len(records):
            records[validation["epoch"] - 1].update(validation)
    return records
