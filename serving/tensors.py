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
FILL_IN_TENSORFLOW = 1 << 20  # elements from which a tensor of one repeated value is filled by TensorFlow


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


def request_bytes(proto: tensor_pb2.TensorProto, max_elements: int = DEFAULT_MAX_ELEMENTS) -> int:
    """The working memory a request tensor will cost, from its declared shape and image headers, before it is built.

    0 for a tensor ``from_request_proto`` will refuse (it says why, in TF Serving's order of checks).
    """
    from serving.memory import COPIES, decoded_bytes

    try:
        count = declared_elements(proto, "", max_elements)
    except TensorParseError:
        return 0
    if proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        total = sum(decoded_bytes(value) for value in values)
        if values and len(values) < count:  # TensorFlow's fill repeats the last value
            total += (count - len(values)) * decoded_bytes(values[-1])
        return total
    if proto.dtype not in TYPED_FIELDS:
        return 0
    return count * tf.dtypes.as_dtype(proto.dtype).size * COPIES


def from_request_proto(proto: tensor_pb2.TensorProto, alias: str,
                       max_elements: int = DEFAULT_MAX_ELEMENTS) -> np.ndarray | tf.Tensor:
    """A request TensorProto as a numpy array, or TensorParseError as TF Serving reports it.

    A large tensor of one repeated value (none sent: zeros) comes back as a tf.Tensor TensorFlow filled.
    """
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
        if proto.dtype != types_pb2.DT_STRING and sent <= 1 and count >= FILL_IN_TENSORFLOW:
            # No values (zeros) or one for all: TensorFlow fills the tensor itself. Through numpy the array and
            # the two copies converting it make to a tensor cost 3x (a 61-byte [1, 4096, 4096, 3] uint8 request
            # cost 101 MB; filled here, 50 MB). check_arrays and the signature take the tensor as it is.
            one = tensor_pb2.TensorProto(dtype=proto.dtype)  # the value read exactly as the whole would be
            one.tensor_shape.dim.add(size=1)
            getattr(one, TYPED_FIELDS[proto.dtype]).extend(getattr(proto, TYPED_FIELDS[proto.dtype]))
            try:
                value = tf.make_ndarray(one)
            except Exception:  # noqa: BLE001 - as below
                raise TensorParseError(f"tensor parsing error: {alias}") from None
            return tf.fill([d.size for d in proto.tensor_shape.dim], tf.constant(value[0]))
    try:
        return tf.make_ndarray(proto)
    except Exception:  # noqa: BLE001 - anything TensorFlow cannot read is the client's malformed tensor
        raise TensorParseError(f"tensor parsing error: {alias}") from None
