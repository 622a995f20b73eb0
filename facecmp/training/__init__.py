"""Training: fine-tuning MTCNN stages (sample mining in ``samples/`` and ``hard_mining``,
augmentation, losses, the one training loop in ``loop`` with its run states in ``run_state``,
threshold calibration), in one process or several (everything about processes in
``distributed``), the task-2 recognizer, and dlib's HOG detector.

Imports from data, detection, evaluation and the top-level helpers (errors, atomic, process)."""

from facecmp.training.augment import AugmentSettings
from facecmp.training.calibrate import DEFAULT_GRID, best_thresholds, stage_recall
from facecmp.training.finetune import DEFAULT_TRAINING, FinetuneSettings, finetune
from facecmp.training.hard_mining import HardMiningSettings, default_hard_mining, mine_hard_samples, mine_stage_samples
from facecmp.training.loop import TrainResult, TrainSettings, train_stage
from facecmp.training.losses import LossWeights, mtcnn_loss
from facecmp.training.samples import MiningSettings, SampleDataset, SampleSet, iou_labels, mine_pnet_samples, mine_samples

__all__ = [
    "AugmentSettings",
    "DEFAULT_GRID",
    "DEFAULT_TRAINING",
    "FinetuneSettings",
    "HardMiningSettings",
    "LossWeights",
    "MiningSettings",
    "SampleDataset",
    "SampleSet",
    "TrainResult",
    "TrainSettings",
    "best_thresholds",
    "default_hard_mining",
    "finetune",
    "iou_labels",
    "mine_hard_samples",
    "mine_pnet_samples",
    "mine_samples",
    "mine_stage_samples",
    "mtcnn_loss",
    "stage_recall",
    "train_stage",
]
