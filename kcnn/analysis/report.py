"""``analyze(model)``: a per-layer report of shapes, parameters, the notes' counts and receptive fields.

Conventions (stated once, used everywhere; docs/analysis.md has the formulas):
- MACs count multiply-accumulates of convolution (1-D, 2-D, 3-D, depthwise,
  separable, transposed) and dense layers for one input, classifier included;
  batch norm, activations, pooling and merges count zero (BN folds into the
  preceding convolution at inference). FLOPs = 2 x MACs. Pooling's comparisons
  or additions are reported apart, as ``pooling_ops``.
- A layer type kcnn does not know is reported as not analysed: its counts are
  ``None``, and the model's ``total_macs`` is flagged incomplete.
- The receptive field is per axis (length; height, width; depth, height, width) in
  input positions; ``jump`` is the distance in input positions between
  neighbouring units (the effective stride). After a global pooling or
  flattening layer a unit sees the whole input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras

from kcnn.analysis import layer_kinds

COUNTS = ("neurons", "connections", "weights_per_unit", "multiplications", "additions", "accumulations_notes",
          "bias_additions", "pooling_ops")


def _kind(layer) -> str:
    """The Keras type a layer computes as: its class, or its nearest base kcnn knows (a Conv2D subclass is a Conv2D)."""
    for cls in type(layer).__mro__:
        if layer_kinds.known(cls.__name__):
            return cls.__name__
    return type(layer).__name__


@dataclass
class LayerReport:
    """One layer: its geometry, shapes, parameters, the notes' counts (see ``kcnn.analysis.LayerCost``) and
    receptive field. A layer kcnn has no formula for has ``analysed=False`` and ``None`` for ``macs`` and every
    count; a layer that only moves, rescales or merges values has zeros and ``weights_per_unit=None``."""

    name: str
    type: str
    kernel: tuple | None
    strides: tuple | None
    padding: str | tuple | None
    dilation: tuple | None
    input_shape: list
    output_shape: tuple
    params: int
    macs: int | None
    activations: int
    receptive_field: tuple
    jump: tuple
    notes: list = field(default_factory=list)
    analysed: bool = True
    neurons: int | None = 0
    connections: int | None = 0
    weights_per_unit: int | None = None
    multiplications: int | None = 0
    additions: int | None = 0
    accumulations_notes: int | None = 0
    bias_additions: int | None = 0
    pooling_ops: int | None = 0

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
            "analysed": self.analysed,
            **{count: getattr(self, count) for count in COUNTS},
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
        """Layers with a note: not analysed, a Keras-built shape that differs from the formula's, or a filter
        that does not fit."""
        return [layer for layer in self.layers if layer.notes]

    @property
    def not_analysed(self) -> list:
        """Names of the layers whose type kcnn does not know (their MACs are missing from ``total_macs``)."""
        return [layer.name for layer in self.layers if not layer.analysed]

    @property
    def total_pooling_ops(self) -> int:
        return sum(layer.pooling_ops or 0 for layer in self.layers)

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
            "total_macs_complete": not self.not_analysed,
            "not_analysed": self.not_analysed,
            "total_pooling_ops": self.total_pooling_ops,
        }


def analyze(model: keras.Model, *, input_shape: tuple | None = None, strict: bool = False) -> ModelReport:
    """Report every layer of a functional or Sequential Keras model for one input.

    ``input_shape`` (e.g. (height, width, channels) or (steps, channels)) fixes
    sizes a model left as ``None``. With ``strict=True`` a convolution or pooling
    whose filter does not tile its input raises
    :class:`kcnn.analysis.FilterDoesNotFit`; by default the layer is reported as
    Keras builds it (floor) and flagged in its ``notes``.
    """
    model = _graph_model(model, input_shape)
    model_input_shape = tuple(model.inputs[0].shape[1:])
    for tensor in model.inputs:
        if any(d is None for d in tensor.shape[1:]):
            raise ValueError(
                f"{model.name} has input shape {tuple(tensor.shape[1:])} with unknown sizes; "
                "pass input_shape=(height, width, channels) to analyze it at a given size"
            )
    fields = {id(t): _unit_field(t) for t in model.inputs}  # id(tensor) -> (receptive field, jump) per axis
    rows, activation_bytes = [], 0
    for node in _nodes_in_order(model):
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = list(node.input_tensors)
        outputs = list(node.output_tensors)
        in_fields = [fields.get(id(t)) or _unit_field(t) for t in inputs]
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
        total_macs=sum(r.macs or 0 for r in rows),
        activation_bytes=activation_bytes,
    )


def _unit_field(tensor) -> tuple:
    """A tensor's own positions: each sees one position (itself), one apart."""
    axes = max(len(tensor.shape) - 2, 0)
    return (1,) * axes, (1,) * axes


def _nested_report(submodel, inputs, outputs, in_fields, strict) -> LayerReport:
    """A model used as a layer: one row with its totals; its receptive field composes with the outer one."""
    sub = analyze(submodel, input_shape=tuple(inputs[0].shape[1:]), strict=strict)
    (rf, jump), last = in_fields[0], sub.layers[-1] if sub.layers else None
    sub_rf, sub_jump = (last.receptive_field, last.jump) if last else (rf, (1,) * len(rf))
    if len(sub_rf) == len(rf):
        rf, jump = (tuple(r + (s - 1) * j for r, s, j in zip(rf, sub_rf, jump)),
                    tuple(j * s for j, s in zip(jump, sub_jump)))
    counts = {count: sum(getattr(layer, count) or 0 for layer in sub.layers) for count in COUNTS
              if count != "weights_per_unit"}
    return LayerReport(
        name=submodel.name,
        type=type(submodel).__name__,
        kernel=None, strides=None, padding=None, dilation=None,
        input_shape=[tuple(t.shape[1:]) for t in inputs],
        output_shape=tuple(outputs[0].shape[1:]),
        params=sub.total_params,
        macs=sub.total_macs,
        activations=sum(layer.activations for layer in sub.layers),
        receptive_field=rf,
        jump=jump,
        notes=[f"nested model: analyze(model.get_layer({submodel.name!r})) reports its layers"]
        + [f"{layer.name}: {note}" for layer in sub.mismatches for note in layer.notes],
        analysed=not sub.not_analysed,
        **counts,
    )


def feature_strides(model: keras.Model) -> list[tuple[int, ...]]:
    """The effective stride (jump) of each of a model's outputs, without needing spatial sizes."""
    fields = {id(t): _unit_field(t) for t in model.inputs}
    for node in _nodes_in_order(model):
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        in_fields = [fields.get(id(t)) or _unit_field(t) for t in node.input_tensors]
        _, jump = layer_kinds.propagate(type(layer).__name__, layer.get_config(), in_fields, None)
        for tensor in node.output_tensors:
            fields[id(tensor)] = ((1,) * len(jump), jump)
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


def _layer_report(layer, inputs, outputs, in_fields, strict) -> LayerReport:
    kind = _kind(layer)
    in_shapes = [tuple(t.shape[1:]) for t in inputs]
    out_shape = tuple(outputs[0].shape[1:])
    config = layer.get_config()
    shape = layer_kinds.geometry(kind, config)
    kernel, strides, padding, dilation = shape if shape else (None,) * 4
    if kind.startswith(("ZeroPadding", "Cropping")):
        padding = _nested_tuple(config.get("padding", config.get("cropping")))
    analysed = layer_kinds.known(kind) and config.get("data_format", "channels_last") == "channels_last"
    cost = layer_kinds.layer_cost(kind, config, in_shapes[0], strict=strict) if analysed else None
    notes = layer_kinds.shape_notes(kind, config, in_shapes[0], out_shape, cost, strict)
    if not analysed:
        notes.append(f"not analysed: kcnn has no formula for {kind}"
                     + (" with channels_first data" if layer_kinds.known(kind) else "")
                     + "; its MACs are unknown and left out of total_macs")
        counts = dict.fromkeys(COUNTS)
    elif cost is None:  # a layer that only moves, rescales or merges values
        counts = dict.fromkeys(COUNTS, 0)
        counts["weights_per_unit"] = None
    else:
        counts = {count: getattr(cost, count) for count in COUNTS}
    rf, jump = layer_kinds.propagate(kind, config, in_fields, in_shapes)
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
        macs=(cost.macs if cost else 0) if analysed else None,
        activations=sum(layer_kinds.positions(t.shape[1:]) for t in outputs),
        receptive_field=tuple(math.ceil(r) for r in rf),  # after a transposed convolution: at most this many
        jump=tuple(int(j) if float(j).is_integer() else float(j) for j in jump),
        notes=notes,
        analysed=analysed,
        **counts,
    )


def _nested_tuple(value):
    return tuple(_nested_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
