"""The shared training engine: device, mixed precision, seeding, checkpoint/resume, early stopping, logs.

Link prediction (:class:`OneToNTask`) and node classification both train through :class:`Trainer`::

    task = OneToNTask(kg, model, batch_size=128)
    trainer = Trainer(model, task, torch.optim.Adam(model.parameters(), 5e-4), TrainConfig(epochs=100), run_dir)
    result = trainer.fit()              # or fit(resume=True) after an interruption
    trainer.load_best()                 # parameters of the best validation epoch
"""

from imf_kg.training.checkpoint import CheckpointError
from imf_kg.training.device import is_main_process, resolve_device, seed_everything
from imf_kg.training.early_stopping import EarlyStopping
from imf_kg.training.one_to_n import OneToNTask, flatten_link_prediction_metrics, smooth_labels
from imf_kg.training.task import TrainingTask
from imf_kg.training.train_config import TrainConfig
from imf_kg.training.trainer import Trainer, TrainingDivergedError, TrainResult

__all__ = [
    "CheckpointError",
    "EarlyStopping",
    "OneToNTask",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "TrainingTask",
    "TrainResult",
    "flatten_link_prediction_metrics",
    "is_main_process",
    "resolve_device",
    "seed_everything",
    "smooth_labels",
]
