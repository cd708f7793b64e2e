"""Record torchvision's own outputs for the models kcnn.weights maps (run where PyTorch is installed).

    python tests/kcnn/torchvision_reference/make_reference.py   # torch + torchvision + numpy

Each torchvision model is built with ``weights=None``, filled with ``seeded.state_dict``
(deterministic values from names and shapes), put in eval mode and run on
``seeded.images`` normalised as torchvision's ImageClassification preset does
((x / 255 - mean) / std). ``reference.json`` keeps the tensor names, shapes and
dtypes, a digest of the values, the input size and torchvision's outputs; the test
``tests/kcnn/test_weights_torchvision_parity.py`` rebuilds the same state dict with
numpy, loads it into kcnn's model and compares. Nothing here imports kcnn or Keras.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seeded  # noqa: E402

SEED = 2026
BATCH = 2
MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageClassification preset
STD = (0.229, 0.224, 0.225)
# The flatten heads (AlexNet, VGG) need the checkpoints' 224 input; the others run at an odd
# size, so every "same"/ceil-mode/symmetric padding difference would show in the output.
MODELS = {
    "alexnet": 224, "vgg11": 224, "vgg13": 224, "vgg16": 224, "vgg19": 224,
    "resnet18": 67, "resnet34": 67, "squeezenet1_0": 67, "squeezenet1_1": 67,
    "densenet121": 67, "mobilenet_v2": 67, "googlenet": 67,
}


def build(name: str) -> torch.nn.Module:
    if name == "googlenet":
        # As torchvision builds it for its IMAGENET1K_V1 weights: transform_input=True and the
        # auxiliary classifiers present (their tensors are in the checkpoint; eval mode ignores them).
        return torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    return getattr(torchvision.models, name)(weights=None)


def record(name: str, size: int) -> dict:
    model = build(name).eval()
    state = model.state_dict()
    spec = [[key, list(value.shape), str(value.dtype).replace("torch.", "")] for key, value in state.items()]
    values = seeded.state_dict(SEED, spec)
    model.load_state_dict({key: torch.from_numpy(value) for key, value in values.items()}, strict=True)
    images = seeded.images(SEED, BATCH, size)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(x)
    return {"size": size, "batch": BATCH, "tensors": spec, "digest": seeded.digest(values),
            "num_params": sum(p.numel() for p in model.parameters()),
            "logits": logits.double().numpy().round(7).tolist()}


def main() -> None:
    torch.manual_seed(0)
    torch.backends.cudnn.deterministic = True
    out = {"seed": SEED, "mean": MEAN, "std": STD, "torch": torch.__version__,
           "torchvision": torchvision.__version__, "numpy": np.__version__, "models": {}}
    for name, size in MODELS.items():
        out["models"][name] = record(name, size)
        print(name, size, "logit scale", float(np.abs(out["models"][name]["logits"]).max()), flush=True)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.json")
    with open(path + ".tmp", "w") as handle:
        json.dump(out, handle, separators=(",", ":"))
    os.replace(path + ".tmp", path)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
