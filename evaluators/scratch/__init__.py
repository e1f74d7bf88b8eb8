"""Training a found architecture from scratch: the full recipe, checkpoints, resume and ONNX.

The proxy (evaluators/proxy.py) ranks candidates with a few epochs; this trains the chosen one
properly and reports its top-1 on the held-out split: the official test split when the data set
has one (CIFAR, folders with ``test/``), else the validation split carved from the training
files. Training selects nothing on that split (no best-epoch pick, no early stopping); the test
split's figure is therefore an unbiased estimate. The validation split is the one the proxy
scores on (same data, same seed), so for an architecture a search picked there, its figure is
optimistic.

The recipe, defaults of :class:`TrainConfig` (the reasons are beside each field):

- SGD with Nesterov momentum 0.9; peak learning rate 0.1 per 128 images, scaled linearly with
  the batch (Goyal et al., 2017, "Accurate, Large Minibatch SGD"); linear warm-up over 5 epochs
  (at most a tenth of the run) then cosine decay to zero, stepped per iteration;
- cross-entropy with label smoothing 0.1 (Szegedy et al., 2016);
- weight decay 5e-4 (the usual value for CIFAR-size data; the GhostNet paper used 4e-5 on
  ImageNet), never on BatchNorm parameters or biases;
- dropout before the classifier as the architecture says (``Architecture.dropout``);
- random crop (zero padding of 1/8 of the side) and horizontal flip on the device, per batch;
  no flip for digits, where a mirrored digit is another shape;
- the data set's native resolution; below 64 px the stem keeps stride 1 (the usual CIFAR
  adaptation of ImageNet networks, the same one the proxy uses), from 64 px on it has the
  deployment stride 2;
- every BatchNorm with momentum 0.1, and its statistics recomputed exactly on 2,048 training
  images before each evaluation ("precise BN"), so per-epoch figures measure the weights;
- channels_last; bf16 (else fp16) autocast on CUDA only.

That is the default recipe, ``small-data``; ``config.RECIPES`` holds the named others (the
GhostNet paper's ImageNet training, with random-resized crops at 224 px, is
``ghostnet-imagenet``).

One job a module: ``config`` (the recipes), ``checkpoint`` (saving, loading untrusted files,
resume checks), ``sources`` (images on the device, or files read while training), ``group``
(a worker's place in a data-parallel run), ``loop`` (the training run) and ``onnx`` (export and
its check). The training pieces they share with the proxy are in evaluators/training.py.
"""

from evaluators.scratch.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    check_resume,
    load_checkpoint,
    model_from_checkpoint,
)
from evaluators.scratch.config import (
    BASE_BATCH,
    BASE_LR,
    DEFAULT_RECIPE,
    RECIPES,
    SMALL_INPUT,
    TRAIN_PRESETS,
    TrainConfig,
    pick_resolution,
    train_config,
)
from evaluators.scratch.group import WorkerGroup
from evaluators.scratch.loop import EpochRecord, TrainProgress, TrainResult, train_from_scratch
from evaluators.scratch.onnx import ONNX_OPSET, OnnxError, OnnxExport, export_onnx, onnx_available
from evaluators.training import ConfigError
from evaluators.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["TrainConfig", "TRAIN_PRESETS", "RECIPES", "DEFAULT_RECIPE", "pick_resolution",
           "train_config", "WorkerGroup", "EpochRecord", "TrainProgress",
           "TrainResult", "CheckpointError", "ConfigError", "OnnxError", "OnnxExport",
           "train_from_scratch", "load_checkpoint", "check_resume", "model_from_checkpoint",
           "export_onnx", "onnx_available", "CHECKPOINT_NAME", "BASE_LR", "BASE_BATCH",
           "SMALL_INPUT", "ONNX_OPSET", "IMAGENET_MEAN", "IMAGENET_STD"]
