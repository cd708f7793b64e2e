"""The named choices of the data and training layer, in one place and free of TensorFlow.

The config checks, the command line's ``choices=`` and the modules that implement
each choice all read these tuples, so a new preset or mode is added here once (the
implementing module asserts at import that it covers exactly these names).
"""

SPLITS = ("train", "validation", "test")
AUGMENT_PRESETS = ("none", "cifar", "alexnet", "inception", "strong")
MIXES = ("mixup", "cutmix")
BAD_FILE_POLICIES = ("error", "skip")
TARGETS = ("label", "mask", "boxes")
TTA_MODES = ("none", "ten_crop")
CHANNELS = (1, 3)

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
LR_SCALINGS = ("none", "linear")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
JIT_COMPILE = ("auto", "true", "false")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
