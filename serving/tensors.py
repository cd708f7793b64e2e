"""TensorProto <-> numpy as TensorFlow Serving converts them.

Responses fill the typed repeated field of each dtype (``float_val``, ``int_val``,
``int64_val``, ``string_val``...), which is what TF Serving's Predict does by default
(``Tensor::AsProtoField`` in ``predict_util.cc``), so clients that read only the typed
fields (TF Serving's example clients) see the values.

Requests are checked before anything is allocated: a shape with negative dimensions,
``unknown_rank`` together with dimensions, or more elements than ``max_elements`` is
rejected as TensorFlow's ``Tensor::FromProto`` rejects an invalid shape
("tensor parsing error: NAME").
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

# dtype -> the TensorProto field its values travel in (tensor.proto's comments; Tensor::AsProtoField).
TYPED_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val", types_pb2.DT_STRING: "string_val", types_pb2.DT_HALF: "half_val",
    types_pb2.DT_BFLOAT16: "half_val",
}
# A request tensor may declare at most this many elements (kcnn's guard; --max_request_elements): one
# 4096x4096 RGB image, the same bound exports put on predict_image_bytes (--max-image-pixels). A 61-byte
# request declaring [1, 8192, 8192, 3] and no values would otherwise make the server allocate 201 MB.
DEFAULT_MAX_ELEMENTS = 4096 * 4096 * 3


class TensorParseError(ValueError):
    """A request tensor TensorFlow would not parse; the message is TF Serving's for its alias."""


def to_typed_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A numpy array as a TensorProto with its values in the dtype's typed field (not tensor_content)."""
    dtype = tf.dtypes.as_dtype(array.dtype if array.dtype != object else tf.string)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    field = TYPED_FIELDS.get(dtype.as_datatype_enum)
    if field is None:  # complex and other rare dtypes keep TensorFlow's own encoding
        return tf.make_tensor_proto(array)
    flat = array.ravel()
    if field == "half_val":  # halves travel as their 16-bit patterns
        flat = flat.view(np.uint16)
    getattr(proto, field).extend(flat.tolist())
    return proto


# [kcnn] guard, TF Serving has none: a TensorProto with fewer values than its shape repeats the last one, so a
# 129-byte request holding one 69-byte PNG and declaring 20,000 images made the server decode 20,000 images
# (3.5 GB). Filling a few is kept (it is TensorFlow's format); a request that wants more sends them.
MAX_STRING_FILL = 64


def declared_elements(proto: tensor_pb2.TensorProto, alias: str, max_elements: int) -> int:
    """The element count a request tensor declares, after TensorFlow's shape checks and kcnn's size limit."""
    shape = proto.tensor_shape
    if shape.unknown_rank and shape.dim:
        raise TensorParseError(f"tensor parsing error: {alias}")
    count = 1
    for dim in shape.dim:
        if dim.size < 0:
            raise TensorParseError(f"tensor parsing error: {alias}")
        count *= dim.size
        if count > max_elements:
            raise TensorParseError(f"tensor parsing error: {alias} (it declares more than {max_elements} elements, "
                                   "the server's --max_request_elements)")
    return count


def from_request_proto(proto: tensor_pb2.TensorProto, alias: str,
                       max_elements: int = DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """A request TensorProto as a numpy array, or TensorParseError as TF Serving reports it."""
    count = declared_elements(proto, alias, max_elements)
    if proto.dtype not in TYPED_FIELDS or proto.dtype == types_pb2.DT_BFLOAT16:
        raise TensorParseError(f"tensor parsing error: {alias}")
    if proto.tensor_content:
        itemsize = tf.dtypes.as_dtype(proto.dtype).size
        if proto.dtype == types_pb2.DT_STRING or len(proto.tensor_content) != count * itemsize:
            raise TensorParseError(f"tensor parsing error: {alias}")
    else:
        sent = len(getattr(proto, TYPED_FIELDS[proto.dtype]))
        if sent > count:
            raise TensorParseError(f"tensor parsing error: {alias}")
        if proto.dtype == types_pb2.DT_STRING and 0 < sent < count and count - sent > MAX_STRING_FILL:
            raise TensorParseError(
                f"tensor parsing error: {alias} (it declares {count} strings and sends {sent}; kcnn serve repeats "
                f"the last one for at most {MAX_STRING_FILL} more, so send every value)")
    try:
        return tf.make_ndarray(proto)
    except Exception:  # noqa: BLE001 - anything TensorFlow cannot read is the client's malformed tensor
        raise TensorParseError(f"tensor parsing error: {alias}") from None
