"""``analyze(model)``: a per-layer report of shapes, parameters, MACs and receptive fields.

Conventions (stated once, used everywhere):
- MACs count multiply-accumulates of convolution and dense layers for one image,
  classifier included; batch norm, activations, pooling and additions count zero
  (BN folds into the preceding convolution at inference). FLOPs = 2 x MACs.
- The receptive field is per axis (height, width) in input pixels; ``jump`` is
  the distance in input pixels between neighbouring units (the effective stride).
  After a global pooling or flattening layer a unit sees the whole input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras

from kcnn.analysis import arithmetic

CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")
POOL_TYPES = ("MaxPooling2D", "AveragePooling2D")
GLOBAL_TYPES = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten")
KNOWN_TYPES = CONV_TYPES + POOL_TYPES + GLOBAL_TYPES + ("Dense", "ZeroPadding2D")


def _kind(layer) -> str:
    """The Keras type a layer computes as: its class, or its nearest known base (a Conv2D subclass is a Conv2D)."""
    for cls in type(layer).__mro__:
        if cls.__name__ in KNOWN_TYPES:
            return cls.__name__
    return type(layer).__name__


@dataclass
class LayerReport:
    name: str
    type: str
    kernel: tuple | None
    strides: tuple | None
    padding: str | tuple | None
    dilation: tuple | None
    input_shape: list
    output_shape: tuple
    params: int
    macs: int
    activations: int
    receptive_field: tuple
    jump: tuple
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        listed = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        return {
            "name": self.name,
            "type": self.type,
            "kernel": listed(self.kernel),
            "strides": listed(self.strides),
            "padding": listed(self.padding),
            "dilation": listed(self.dilation),
            "input_shape": [list(s) for s in self.input_shape],
            "output_shape": list(self.output_shape),
            "params": self.params,
            "macs": self.macs,
            "activations": self.activations,
            "receptive_field": list(self.receptive_field),
            "jump": list(self.jump),
            "notes": list(self.notes),
        }


@dataclass
class ModelReport:
    model: str
    input_shape: tuple
    layers: list
    total_params: int
    trainable_params: int
    total_macs: int
    activation_bytes: int

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def flops(self) -> int:
        return 2 * self.total_macs

    @property
    def mismatches(self) -> list:
        """Layers whose Keras-built shape differs from the formula's, or whose filter does not fit."""
        return [layer for layer in self.layers if layer.notes]

    def layer(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in {self.model}")

    def as_dict(self) -> dict:
        """The stable JSON contract of ``kcnn summary --format json``."""
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "layers": [layer.as_dict() for layer in self.layers],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_macs": self.total_macs,
            "total_flops": self.flops,
            "activation_bytes": self.activation_bytes,
        }


def analyze(model: keras.Model, *, input_shape: tuple | None = None, strict: bool = False) -> ModelReport:
    """Report every layer of a functional or Sequential Keras model for one input image.

    ``input_shape`` (height, width, channels) fixes spatial sizes a model left as
    ``None``. With ``strict=True`` a convolution or pooling whose filter does not
    tile its input raises :class:`kcnn.analysis.FilterDoesNotFit`; by default the
    layer is reported as Keras builds it (floor) and flagged in its ``notes``.
    """
    model = _graph_model(model, input_shape)
    model_input_shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in model_input_shape):
        raise ValueError(
            f"{model.name} has input shape {model_input_shape} with unknown sizes; "
            "pass input_shape=(height, width, channels) to analyze it at a given size"
        )
    fields = {}  # id(tensor) -> (receptive field (h, w), jump (h, w))
    for tensor in model.inputs:
        fields[id(tensor)] = ((1, 1), (1, 1))
    rows, activation_bytes = [], 0
    for node in _nodes_in_order(model):
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = list(node.input_tensors)
        outputs = list(node.output_tensors)
        in_fields = [fields.get(id(t), ((1, 1), (1, 1))) for t in inputs]
        if isinstance(layer, keras.Model):
            row = _nested_report(layer, inputs, outputs, in_fields, strict)
        else:
            row = _layer_report(layer, inputs, outputs, in_fields, strict)
        for tensor in outputs:
            fields[id(tensor)] = (row.receptive_field, row.jump)
        rows.append(row)
        activation_bytes += row.activations * _dtype_bytes(layer)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return ModelReport(
        model=model.name,
        input_shape=model_input_shape,
        layers=rows,
        total_params=int(model.count_params()),
        trainable_params=int(trainable),
        total_macs=sum(r.macs for r in rows),
        activation_bytes=activation_bytes,
    )


def _nested_report(submodel, inputs, outputs, in_fields, strict) -> LayerReport:
    """A model used as a layer: one row with its totals; its receptive field composes with the outer one."""
    sub = analyze(submodel, input_shape=tuple(inputs[0].shape[1:]), strict=strict)
    (rf, jump), last = in_fields[0], sub.layers[-1] if sub.layers else None
    sub_rf, sub_jump = (last.receptive_field, last.jump) if last else ((1, 1), (1, 1))
    return LayerReport(
        name=submodel.name,
        type=type(submodel).__name__,
        kernel=None, strides=None, padding=None, dilation=None,
        input_shape=[tuple(t.shape[1:]) for t in inputs],
        output_shape=tuple(outputs[0].shape[1:]),
        params=sub.total_params,
        macs=sub.total_macs,
        activations=sum(layer.activations for layer in sub.layers),
        receptive_field=tuple(rf[a] + (sub_rf[a] - 1) * jump[a] for a in range(2)),
        jump=tuple(jump[a] * sub_jump[a] for a in range(2)),
        notes=[f"nested model: analyze(model.get_layer({submodel.name!r})) reports its layers"]
        + [f"{layer.name}: {note}" for layer in sub.mismatches for note in layer.notes],
    )


def feature_strides(model: keras.Model) -> list[tuple[int, int]]:
    """The effective stride (jump) of each of a model's outputs, without needing spatial sizes."""
    fields = {id(t): ((1, 1), (1, 1)) for t in model.inputs}
    for node in _nodes_in_order(model):
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        in_fields = [fields.get(id(t), ((1, 1), (1, 1))) for t in node.input_tensors]
        _, jump = _propagate(layer, in_fields, None)
        for tensor in node.output_tensors:
            fields[id(tensor)] = ((1, 1), jump)
    return [tuple(int(j) for j in fields[id(t)][1]) for t in model.outputs]


def _graph_model(model, input_shape):
    if isinstance(model, keras.Sequential):
        if not model.built or getattr(model, "_functional", None) is None:
            raise ValueError("build the Sequential model first (give it a keras.Input) before analyzing it")
        model = model._functional
    if not hasattr(model, "_nodes_by_depth") or not getattr(model, "inputs", None):
        raise ValueError(
            f"analyze needs a functional or Sequential model with a defined graph; {type(model).__name__} is a "
            "subclassed model whose layers are only known when called. Wrap it in a functional model first"
        )
    if input_shape is not None:
        wanted = tuple(input_shape)
        if tuple(model.inputs[0].shape[1:]) != wanted:
            new_input = keras.Input(shape=wanted, name=model.inputs[0].name)
            structure = [new_input] if isinstance(model.input, (list, tuple)) else new_input
            model = keras.models.clone_model(model, input_tensors=structure)
    return model


def _nodes_in_order(model):
    """The model's nodes, inputs first (Keras keeps them by depth, deepest = closest to the inputs)."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        yield from model._nodes_by_depth[depth]


def _dtype_bytes(layer) -> int:
    dtype = getattr(layer, "compute_dtype", None) or "float32"
    return {"float16": 2, "bfloat16": 2, "float64": 8, "uint8": 1, "int8": 1}.get(str(dtype), 4)


def _hw(shape) -> tuple:
    return tuple(shape[1:3]) if len(shape) == 4 else ()


def _layer_report(layer, inputs, outputs, in_fields, strict) -> LayerReport:
    kind = _kind(layer)
    in_shapes = [tuple(t.shape[1:]) for t in inputs]
    out_shape = tuple(outputs[0].shape[1:])
    config = layer.get_config()
    kernel = strides = padding = dilation = None
    notes = []
    if kind in CONV_TYPES or kind in POOL_TYPES:
        kernel = tuple(config.get("kernel_size") or config.get("pool_size"))
        strides = tuple(config.get("strides") or kernel)
        padding = config.get("padding", "valid")
        dilation = tuple(config.get("dilation_rate", (1, 1)))
        notes = _check_shape(kind, in_shapes[0], out_shape, kernel, strides, padding, dilation, config, strict)
    elif kind == "ZeroPadding2D":
        padding = tuple(tuple(p) for p in config["padding"])
    macs = _macs(layer, kind, in_shapes, out_shape, config)
    rf, jump = _propagate(layer, in_fields, in_shapes)
    return LayerReport(
        name=layer.name,
        type=type(layer).__name__,
        kernel=kernel,
        strides=strides,
        padding=padding,
        dilation=dilation,
        input_shape=in_shapes,
        output_shape=out_shape,
        params=int(layer.count_params()) if layer.built else 0,
        macs=int(macs),
        activations=sum(math.prod(d for d in t.shape[1:] if d is not None) for t in outputs),
        receptive_field=tuple(int(r) for r in rf),
        jump=tuple(int(j) if float(j).is_integer() else float(j) for j in jump),
        notes=notes,
    )


def _check_shape(kind, in_shape, out_shape, kernel, strides, padding, dilation, config, strict) -> list:
    """Compare the formula's output size with the one Keras built; flag filters that do not tile."""
    notes = []
    for axis in range(2):
        size, built = in_shape[axis], out_shape[axis]
        if size is None or built is None:
            continue
        k, s, d = kernel[axis], strides[axis], dilation[axis]
        if kind == "Conv2DTranspose":
            expected = arithmetic.transposed_conv_output_size(size, k, s, padding)
        else:
            expected = arithmetic.conv_output_size(size, k, s, padding, d, strict=strict)
            if not arithmetic.fits(size, k, s, padding, d):
                left = (size - arithmetic.effective_kernel(k, d)) % s
                notes.append(
                    f"filter does not fit along {'height' if axis == 0 else 'width'}: ({size} - "
                    f"{arithmetic.effective_kernel(k, d)}) / {s} + 1 is not an integer; Keras floors and "
                    f"drops the last {left} row(s)/column(s)"
                )
        if expected != built:
            notes.append(
                f"formula gives {expected} along {'height' if axis == 0 else 'width'} but Keras built {built}"
            )
    return notes


def _macs(layer, kind, in_shapes, out_shape, config) -> int:
    if kind in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose"):
        kh, kw = config["kernel_size"]
        c_in = in_shapes[0][-1]
        positions = math.prod(out_shape[:-1])
        if kind == "Conv2D":
            return positions * kh * kw * (c_in // config.get("groups", 1)) * out_shape[-1]
        if kind == "DepthwiseConv2D":
            return positions * kh * kw * c_in * config["depth_multiplier"]
        if kind == "SeparableConv2D":
            mid = c_in * config["depth_multiplier"]
            return positions * (kh * kw * mid + mid * out_shape[-1])
        return math.prod(in_shapes[0][:-1]) * kh * kw * c_in * out_shape[-1]
    if kind == "Dense":
        return math.prod(in_shapes[0]) * out_shape[-1]
    return 0


def _propagate(layer, in_fields, in_shapes):
    """Receptive field and jump after ``layer``: r_out = r_in + (k_eff - 1) * j_in, j_out = j_in * s."""
    rf = tuple(max(f[0][a] for f in in_fields) for a in range(2))
    jump = tuple(max(f[1][a] for f in in_fields) for a in range(2))
    kind = _kind(layer)
    if kind in CONV_TYPES or kind in POOL_TYPES:
        config = layer.get_config()
        kernel = config.get("kernel_size") or config.get("pool_size")
        strides = config.get("strides") or kernel
        dilation = config.get("dilation_rate", (1, 1))
        if kind == "Conv2DTranspose":
            new_jump = tuple(jump[a] / strides[a] for a in range(2))
            taps = tuple(math.ceil(kernel[a] / strides[a]) for a in range(2))
            return tuple(rf[a] + (taps[a] - 1) * jump[a] for a in range(2)), new_jump
        k = tuple(arithmetic.effective_kernel(kernel[a], dilation[a]) for a in range(2))
        return (tuple(rf[a] + (k[a] - 1) * jump[a] for a in range(2)),
                tuple(jump[a] * strides[a] for a in range(2)))
    if kind in GLOBAL_TYPES and in_shapes and len(in_shapes[0]) == 3:
        sizes = in_shapes[0][:2]
        if all(s is not None for s in sizes):
            return tuple(rf[a] + (sizes[a] - 1) * jump[a] for a in range(2)), jump
    return rf, jump
