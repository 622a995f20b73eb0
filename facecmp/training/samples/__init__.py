"""Training samples for a cascade stage: labelled square crops around and away from faces.

One job per module: ``sample_set`` (the arrays: crops, labels, offsets), ``crops`` (one image's
crops and their labels, the MTCNN recipe), ``mining`` (a dataset's PNet samples, balanced and
keyed), ``cache`` (sample sets on disk), ``dataset`` (what training reads: normalised tensors
and the flip). RNet's and ONet's samples, mined with the earlier stages, are
``training.hard_mining``'s. The names below are the package's public ones.
"""

from facecmp.training.samples.cache import cached_samples, load_samples, save_samples
from facecmp.training.samples.crops import (
    MiningSettings,
    box_offsets,
    extract_crops,
    face_regions,
    iou_labels,
    jittered_crops,
    label_crops,
    near_crops,
    pick,
    random_crops,
    select_crops,
)
from facecmp.training.samples.dataset import SampleDataset, batch_loader, hflip
from facecmp.training.samples.mining import (
    MINING_VERSION,
    balance,
    balanced_sample_set,
    mine_image_samples,
    mine_pnet_samples,
    mine_samples,
    mining_fingerprint,
)
from facecmp.training.samples.sample_set import DISCARD, NEGATIVE, PART, POSITIVE, SampleSet

__all__ = [
    "DISCARD",
    "MINING_VERSION",
    "NEGATIVE",
    "PART",
    "POSITIVE",
    "MiningSettings",
    "SampleDataset",
    "batch_loader",
    "SampleSet",
    "balance",
    "balanced_sample_set",
    "box_offsets",
    "cached_samples",
    "extract_crops",
    "face_regions",
    "hflip",
    "iou_labels",
    "jittered_crops",
    "label_crops",
    "load_samples",
    "mine_image_samples",
    "mine_pnet_samples",
    "mine_samples",
    "mining_fingerprint",
    "near_crops",
    "pick",
    "random_crops",
    "save_samples",
    "select_crops",
]
