"""Training the character recognizer (``--stages recognizer``) on annotated face crops.

Data: every annotated face of the training images gives its exact box plus ``jitters_per_face``
jittered boxes (side x0.9-1.15, centre shifted up to 10% of the face), cropped as the
recognizer sees detections (:func:`facecmp.detection.recognizer.face_crops`); the crops are
cached by data fingerprint, settings and seed. Classes are the labels found (characters and
``unknown``), sorted. Imbalance: the cross-entropy weights each class by ``N / (K * count)``,
and the best epoch is chosen by the dev split's *balanced* accuracy (mean recall per class).

The two probe kinds freeze the trunk, so its 256-d features are computed once (of each crop and
its mirror image) and only the linear head trains on them: seconds. ``finetune`` trains trunk
and head end to end with random horizontal flips. Everything random is seeded, and the run state
is checkpointed after every epoch in ``train_state_recognizer.pt``, so ``--resume`` continues
exactly where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from facecmp import atomic
from facecmp.data.images import read_image
from facecmp.data.records import Dataset
from facecmp.detection import cascade as C
from facecmp.detection.recognizer import KINDS, RecognizerNet, face_crops
from facecmp.errors import FacecmpError
from facecmp.training.loop import training_threads
from facecmp.training.run_state import load_run_state, run_recipe, save_run_state
from facecmp.data.fingerprint import code_fingerprint, data_fingerprint, library_versions

STATE_FILE = "train_state_recognizer.pt"
# Bump when the crops produced for the same settings change.
CROPS_VERSION = 1


@dataclass(frozen=True)
class RecognizerSettings:
    kind: str = "finetune"
    # None: 8 epochs end to end, 60 for a probe (an epoch of a probe is a pass over cached features).
    epochs: int | None = None
    batch_size: int = 128
    # None: 1e-3 end to end, 1e-2 for a probe's head.
    lr: float | None = None
    lr_decay: float = 0.85
    weight_decay: float = 1e-4
    patience: int = 4
    jitters_per_face: int = 3
    side_range: tuple[float, float] = (0.9, 1.15)
    max_shift: float = 0.1
    threads: int | None = None  # None: the process's own (what `facecmp --threads` set)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FacecmpError(f"unknown recognizer kind {self.kind!r}; choose one of {', '.join(KINDS)}")

    @property
    def is_probe(self) -> bool:
        return self.kind != "finetune"

    @property
    def n_epochs(self) -> int:
        return self.epochs or (60 if self.is_probe else 8)

    @property
    def learning_rate(self) -> float:
        return self.lr or (1e-2 if self.is_probe else 1e-3)


@dataclass
class FaceCrops:
    """``images`` uint8 ``(N, 3, 48, 48)``; ``labels`` class index per crop; ``classes`` their names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}


def dataset_classes(ds: Dataset) -> tuple[str, ...]:
    """The labels of the dataset's faces (characters and ``unknown``), sorted."""
    classes = tuple(sorted({lab for r in ds.images for lab in r.labels} - {""}))
    if len(classes) < 2:
        raise FacecmpError(
            f"{ds.name}: found {len(classes)} face label(s) {list(classes)}; a recognizer needs at least two. "
            "The 6th annotation column names each face's character."
        )
    return classes


def jittered_boxes(box: np.ndarray, n: int, settings: RecognizerSettings, rng: np.random.Generator) -> np.ndarray:
    """The box itself, then ``n`` jittered copies (side scaled, centre shifted)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1 + 1, y2 - y1 + 1
    scale = rng.uniform(*settings.side_range, n)
    cx = (x1 + x2) / 2 + rng.uniform(-settings.max_shift, settings.max_shift, n) * w
    cy = (y1 + y2) / 2 + rng.uniform(-settings.max_shift, settings.max_shift, n) * h
    jitter = np.stack([cx - scale * w / 2, cy - scale * h / 2, cx + scale * w / 2, cy + scale * h / 2], axis=1)
    return np.concatenate([np.asarray(box, dtype=np.float64)[None], jitter]).astype(np.float32)


def extract_face_crops(ds: Dataset, classes: tuple[str, ...], jitters: int, settings: RecognizerSettings, seed: int,
                       progress: bool = True) -> FaceCrops:
    """Crops of every labelled face of ``ds`` (each image its own seeded generator); ``jitters`` extra per face."""
    index = {c: i for i, c in enumerate(classes)}
    images, labels = [], []
    for i, record in enumerate(tqdm(ds.images, desc="recognizer crops", unit="img", disable=not progress)):
        faces = [(b, index[lab]) for b, lab in zip(record.boxes, record.labels) if lab in index]
        if not faces:
            continue
        rng = np.random.default_rng([seed, i])
        boxes = np.concatenate([jittered_boxes(b, jitters, settings, rng) for b, _ in faces])
        crops = face_crops(read_image(record.path), boxes)
        images.append(crops.round().clamp(0, 255).to(torch.uint8).numpy())
        labels.extend(lab for _, lab in faces for _ in range(jitters + 1))
    if not images:
        raise FacecmpError(f"{ds.name}: no labelled faces to train the recognizer on")
    return FaceCrops(np.ascontiguousarray(np.concatenate(images)), np.asarray(labels, dtype=np.int64), classes)


def cached_face_crops(ds: Dataset, classes, jitters: int, settings: RecognizerSettings, seed: int, cache_dir: Path | None,
                      progress: bool = True) -> FaceCrops:
    if cache_dir is None:
        return extract_face_crops(ds, classes, jitters, settings, seed, progress)
    spec = json.dumps({"v": CROPS_VERSION, "classes": classes, "jitters": jitters, "side": settings.side_range,
                       "shift": settings.max_shift, "seed": seed, "data": data_fingerprint(ds),
                       "code": code_fingerprint(), "libraries": library_versions()}, sort_keys=True)
    path = Path(cache_dir) / f"recognizer_crops_{hashlib.sha256(spec.encode()).hexdigest()[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return FaceCrops(z["images"], z["labels"], tuple(classes))
        except Exception:  # a damaged cache is re-made
            pass
    crops = extract_face_crops(ds, classes, jitters, settings, seed, progress)
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=crops.images, labels=crops.labels)
    return crops


def _normalized(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    return C.normalize(torch.as_tensor(images).float())


@torch.no_grad()
def _features(net: RecognizerNet, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    net.eval()
    device = next(net.parameters()).device
    if not len(images):
        return torch.zeros(0, 256, device=device)
    return torch.cat([net.features(_normalized(images[i:i + batch]).to(device)) for i in range(0, len(images), batch)])


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(weights, dtype=torch.float32)


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[float, list[float]]:
    recalls = [float((predicted[labels == c] == c).mean()) for c in range(n_classes) if (labels == c).any()]
    per_class = [float((predicted[labels == c] == c).mean()) if (labels == c).any() else float("nan") for c in range(n_classes)]
    return (float(np.mean(recalls)) if recalls else 0.0), per_class


@dataclass
class RecognizerResult:
    net: RecognizerNet
    classes: tuple[str, ...]
    info: dict


def train_recognizer(
    train: Dataset,
    dev: Dataset | None,
    onet_state_dict: dict[str, torch.Tensor],
    out_dir: str | Path,
    settings: RecognizerSettings = RecognizerSettings(),
    *,
    seed: int = 0,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    classes: tuple[str, ...] | None = None,
    device: str = "cpu",
) -> RecognizerResult:
    """Train a recognizer of ``settings.kind`` whose trunk starts from ``onet_state_dict``.

    ``dev`` (exact boxes, no jitter) chooses the best epoch; without it a seeded 10% of the
    training images does. ``device``: where the network trains (the crops stay on the CPU and
    go over batch by batch); the result is on the CPU.
    """
    import time

    torch.set_num_threads(training_threads(settings.threads))
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    classes = classes or dataset_classes(train)
    if dev is None or dev.n_faces == 0:
        order = np.random.default_rng([seed, 7]).permutation(len(train.images))
        n_val = max(1, len(order) // 10)
        dev = train.subset([train.images[i].key for i in order[:n_val]], name=f"{train.name}[recognizer-val]")
        train = train.subset([train.images[i].key for i in order[n_val:]])
    start = time.perf_counter()
    cache = Path(cache_dir) if cache_dir is not None else None
    train_crops = cached_face_crops(train, classes, settings.jitters_per_face, settings, seed, cache, progress)
    val_crops = cached_face_crops(dev, classes, 0, settings, seed, cache, progress)
    crops_s = time.perf_counter() - start

    device = torch.device(device)
    net = RecognizerNet.from_onet(onet_state_dict, len(classes)).to(device)
    weights = class_weights(train_crops.labels, len(classes))
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    if settings.is_probe:
        net.requires_grad_(False)
        net.head.requires_grad_(True)
        flipped = np.ascontiguousarray(train_crops.images[..., ::-1])
        x_train = torch.cat([_features(net, train_crops.images), _features(net, flipped)])
        y_train = torch.as_tensor(np.concatenate([train_crops.labels, train_crops.labels]))
        x_val = _features(net, val_crops.images)
        # The head trains on standardised features (dev balanced accuracy on Dexter 0.70 -> 0.75 for a
        # full-batch logistic regression); mean and scale are folded into it afterwards.
        mean, scale = x_train.mean(0), x_train.std(0) + 1e-6
        x_train, x_val = (x_train - mean) / scale, (x_val - mean) / scale
        params = list(net.head.parameters())
    else:
        x_train, y_train = torch.as_tensor(train_crops.images), torch.as_tensor(train_crops.labels)
        x_val = torch.as_tensor(val_crops.images)
        params = list(net.parameters())
    features_s = time.perf_counter() - start
    y_val = val_crops.labels

    def forward(x: torch.Tensor, training: bool) -> torch.Tensor:
        if settings.is_probe:
            return net.head(x)
        x = _normalized(x).to(device)
        if training:
            flip = (torch.rand(len(x), generator=generator) < 0.5).to(device)
            x[flip] = x[flip].flip(-1)
        return net(x)

    optimizer = torch.optim.Adam(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=settings.lr_decay)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device))
    state_path = out_dir / STATE_FILE
    run_id = {"kind": settings.kind, "standardized_probe": True, "seed": seed, "classes": list(classes), "n_train": len(y_train), "n_val": len(y_val),
              "settings": run_recipe(settings)}
    history: list[dict] = []
    best = {"score": -1.0, "epoch": 0, "state_dict": copy.deepcopy(net.state_dict())}
    bad_epochs, stopped = 0, False
    if resume and state_path.is_file():
        history, best, bad_epochs, stopped, _ = load_run_state(state_path, run_id, net, optimizer, scheduler, generator)

    start = time.perf_counter() - sum(h.get("seconds", 0.0) for h in history)
    bar = tqdm(range(len(history), settings.n_epochs), desc=f"training recognizer ({settings.kind})", unit="epoch",
               initial=len(history), total=settings.n_epochs, disable=not progress)
    for epoch in bar:
        if stopped:
            break
        epoch_start = time.perf_counter()
        net.train(not settings.is_probe)
        order = torch.randperm(len(y_train), generator=generator)
        total, seen = 0.0, 0
        for lo in range(0, len(order), settings.batch_size):
            idx = order[lo:lo + settings.batch_size]
            logits = forward(x_train[idx].clone(), training=True)
            loss = loss_fn(logits, y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        scheduler.step()
        net.eval()
        with torch.no_grad():
            predicted = torch.cat([forward(x_val[i:i + 512].clone(), training=False).argmax(1) for i in range(0, len(x_val), 512)]).cpu().numpy()
        score, per_class = balanced_accuracy(predicted, y_val, len(classes))
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_balanced_accuracy": score,
                        "val_accuracy": float((predicted == y_val).mean()),
                        "val_recall": dict(zip(classes, per_class)), "seconds": time.perf_counter() - epoch_start})
        bar.set_postfix(loss=f"{total / max(seen, 1):.4f}", bal_acc=f"{score:.3f}")
        if score > best["score"]:
            best = {"score": score, "epoch": epoch + 1, "state_dict": copy.deepcopy(net.state_dict())}
            bad_epochs = 0
        else:
            bad_epochs += 1
            stopped = bad_epochs >= settings.patience
        save_run_state(state_path, run_id, net, optimizer, scheduler, generator, history, best, bad_epochs, stopped)
    bar.close()
    net.load_state_dict(best["state_dict"])
    net.eval()
    if settings.is_probe:  # fold the standardisation into the head: it then takes the trunk's raw features
        with torch.no_grad():
            weight = net.head.weight / scale
            net.head.bias.sub_(weight @ mean)
            net.head.weight.copy_(weight)
    net.cpu()  # trained on ``device``; kept and saved on the CPU, like the detector's stages
    info = {
        "kind": settings.kind,
        "settings": {**asdict(settings), "epochs": settings.n_epochs, "lr": settings.learning_rate},
        "seed": seed,
        "train_faces": FaceCrops(train_crops.images[:0], train_crops.labels[:: settings.jitters_per_face + 1], classes).counts(),
        "train_crops": len(train_crops.labels),
        "dev_faces": val_crops.counts(),
        "class_weights": dict(zip(classes, weights.tolist())),
        "best_epoch": best["epoch"],
        "dev_balanced_accuracy": best["score"],
        "history": history,
        "timings": {"crops_s": crops_s, "features_s": features_s, "training_s": time.perf_counter() - start},
    }
    return RecognizerResult(net, classes, info)
