"""TF Serving's REST JSON for Predict, read and written by the rules of its REST API.

Rules (from TF Serving's ``g3doc/api_rest.md`` and the behaviour ``util/json_tensor.cc``
specifies): integer dtypes take JSON integers only; float dtypes take numbers
(``NaN``/``Infinity`` too) that fit without loss; ``DT_STRING`` takes strings or
``{"b64": ...}``; booleans take ``true``/``false``; nothing is coerced. A tensor's
shape is read from the first element at each level and every list must agree with
it. Requests come in row (``instances``) or columnar (``inputs``) form; responses
answer in the same form, naming outputs only when there are several.

Integers are read as TF Serving reads them: int8, uint8, int16, uint16 and int32 inputs take
any JSON integer that fits 32 bits (rapidjson's ``IsInt()``, stored in ``int_val``) and the
narrower types wrap (300 -> 44 and -1 -> 255 for uint8), int64 takes ``IsInt64()``, uint32
``IsUint()``, uint64 ``IsUint64()``. Unlike TF Serving, an error never quotes more than
``ECHO_LIMIT`` characters of the request.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np
import tensorflow as tf

ECHO_LIMIT = 64
# The JSON integers each dtype takes (json_tensor.cc: IsInt() for the int_val types, IsInt64, IsUint, IsUint64).
INT32 = (-(1 << 31), (1 << 31) - 1)
INT_RANGES = {tf.uint8: INT32, tf.int8: INT32, tf.int16: INT32, tf.uint16: INT32, tf.int32: INT32,
              tf.int64: (-(1 << 63), (1 << 63) - 1), tf.uint32: (0, (1 << 32) - 1),
              tf.uint64: (0, (1 << 64) - 1)}
# int_val holds 32-bit values; Tensor::FromProto casts them to the narrower dtypes, which wraps them.
WRAPPED_BITS = {tf.uint8: (8, False), tf.int8: (8, True), tf.uint16: (16, False), tf.int16: (16, True)}
FLOAT_DIGITS = {tf.float32: 24, tf.float64: 53, tf.float16: 11}


def type_string(dtype: tf.DType) -> str:
    """TensorFlow's DataTypeString: float, double, half; the rest as tf.DType names them (int32, uint8...)."""
    return {tf.float32: "float", tf.float64: "double", tf.float16: "half"}.get(dtype, dtype.name)


class JsonTensorError(ValueError):
    """A request body TF Serving would answer with 400 and this message."""


def echo(value) -> str:
    """A JSON value as an error message quotes it: compact, and cut at ECHO_LIMIT characters."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT] + "...(truncated)"


def json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value, dtype: tf.DType) -> JsonTensorError:
    return JsonTensorError(f"JSON Value: {echo(value)} Type: {json_type(value)} is not of expected type: "
                           f"{type_string(dtype)}")


def _lossy(value, dtype: tf.DType) -> JsonTensorError:
    return JsonTensorError(f"Cannot convert JSON value: {echo(value)} to {type_string(dtype)} without loss of "
                           "precision.")


def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _scalar(value, dtype: tf.DType):
    """One leaf value, checked against the input's dtype as TF Serving's REST API requires."""
    if dtype == tf.string:
        if isinstance(value, str):
            return value.encode("utf-8", "surrogatepass")
        if isinstance(value, dict):
            if not is_b64(value):
                raise JsonTensorError(f"JSON Value: {echo(value)} not formatted correctly for base64 data")
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise JsonTensorError("Unable to base64 decode") from None
        raise _type_error(value, dtype)
    if dtype == tf.bool:
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype)
    if dtype in FLOAT_DIGITS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, dtype)
        if isinstance(value, int):
            if abs(value) > (1 << FLOAT_DIGITS[dtype]) - 1:
                raise _lossy(value, dtype)
        elif math.isfinite(value) and abs(value) > dtype.max:
            raise _lossy(value, dtype)
        return value
    if dtype in INT_RANGES:
        low, high = INT_RANGES[dtype]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _type_error(value, dtype)
        if dtype in WRAPPED_BITS:
            bits, signed = WRAPPED_BITS[dtype]
            value %= 1 << bits
            if signed and value >= 1 << (bits - 1):
                value -= 1 << bits
        return value
    raise JsonTensorError(f"Conversion of JSON Value: {echo(value)} to type: {type_string(dtype)} is not supported")


def _shape_of(value) -> list[int]:
    """The dense shape TF Serving reads from a JSON value: the length of the first list at each level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list[int], dtype: tf.DType, out: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise JsonTensorError(f"JSON Value: {echo(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                                  f"Expected at level: {len(shape)}")
        out.append(_scalar(value, dtype))
        return
    if level >= len(shape):
        raise JsonTensorError(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise JsonTensorError(f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
                              f"{shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def to_array(value, dtype: tf.DType, max_elements: int) -> np.ndarray:
    """One tensor's JSON value as a numpy array of the signature's dtype."""
    shape = _shape_of(value)
    if math.prod(shape) > max_elements:
        raise JsonTensorError(f"the tensor declares more than {max_elements} elements, the server's "
                              "--max_request_elements")
    flat: list = []
    _fill(value, 0, shape, dtype, flat)
    numpy_dtype = object if dtype == tf.string else dtype.as_numpy_dtype
    return np.array(flat, dtype=numpy_dtype).reshape(shape)


def parse_predict(body: bytes, input_dtypes_for, max_elements: int):
    """A :predict body -> (signature_name, {alias: array}, "row" | "columnar").

    ``input_dtypes_for(signature_name)`` returns the signature's {alias: tf.DType}.
    """
    if not body:
        raise JsonTensorError("JSON Parse error: The document is empty")
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise JsonTensorError(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}") from None
    except json.JSONDecodeError as error:
        raise JsonTensorError(f"JSON Parse error: {error.msg} at offset: {error.pos}") from None
    except RecursionError:
        raise JsonTensorError("JSON Parse error: the document is nested too deeply") from None
    if not isinstance(document, dict):
        raise JsonTensorError(f"JSON Value: {echo(document)} Is not object")
    signature = document.get("signature_name", "")
    if not isinstance(signature, str):
        raise JsonTensorError(f"JSON Value: {echo(document)} not formatted correctly. 'signature_name' key must be a "
                              "string value.")
    dtypes = input_dtypes_for(signature)
    if "instances" in document and "inputs" in document:
        raise JsonTensorError(f"JSON Value: {echo(document)} Not formatted correctly expecting only one of 'inputs' "
                              "or 'instances' keys to exist ")
    if "instances" in document:
        return signature, _from_instances(document, dtypes, max_elements), "row"
    if "inputs" in document:
        return signature, _from_inputs(document["inputs"], dtypes, max_elements), "columnar"
    raise JsonTensorError("Missing 'inputs' or 'instances' key")


def _is_named(value) -> bool:
    return isinstance(value, dict) and not is_b64(value)


def _from_instances(document: dict, dtypes: dict, max_elements: int) -> dict:
    instances = document["instances"]
    if not isinstance(instances, list):
        raise JsonTensorError(f"JSON Value: {echo(document)} Excepting 'instances' to be an list/array")
    if not instances:
        raise JsonTensorError(f"JSON Value: {echo(document)} No values in 'instances' array")
    named = _is_named(instances[0])
    if not named and len(dtypes) > 1:
        raise JsonTensorError("instances is a plain list, but expecting list of objects as multiple input tensors "
                              "required as per tensorinfo_map")
    columns: dict[str, list] = {}
    for index, instance in enumerate(instances):
        if named != _is_named(instance):
            kind = "object but got list" if named else "value/list but got object"
            raise JsonTensorError(f"Expecting {kind} at item {index} of input list")
        items = instance if named else {next(iter(dtypes)): instance}
        for alias, value in items.items():
            if alias not in dtypes:
                raise JsonTensorError(f"Failed to process element: {index} key: {echo(alias)} of 'instances' list. "
                                      f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {echo(alias)}")
            try:
                array = to_array(value, dtypes[alias], max_elements)
            except JsonTensorError as error:
                where = f"key: {alias} " if named else ""
                raise JsonTensorError(f"Failed to process element: {index} {where}of 'instances' list. Error: "
                                      f"INVALID_ARGUMENT: {error}") from None
            column = columns.setdefault(alias, [])
            if column and column[0].size != array.size:
                raise JsonTensorError(f"Failed to process element: {index} of 'instances' list. Error: "
                                      f"INVALID_ARGUMENT: Expecting tensor size: {column[0].size} but got: "
                                      f"{array.size}")
            if column and column[0].shape != array.shape:
                raise JsonTensorError(f"Failed to process element: {index} of 'instances' list. Error: "
                                      f"INVALID_ARGUMENT: Expecting shape {_shape_text(column[0].shape)} but got: "
                                      f"{_shape_text(array.shape)}")
            column.append(array)
        if named and set(items) != set(dtypes):
            raise JsonTensorError(f"Failed to process element: {index} of 'instances' list. JSON object: "
                                  f"{echo(instance)} must only have keys: {','.join(sorted(dtypes))}")
    if sum(sum(a.size for a in column) for column in columns.values()) > max_elements:
        raise JsonTensorError(f"the request declares more than {max_elements} elements, the server's "
                              "--max_request_elements")
    return {alias: np.stack(column) for alias, column in columns.items()}


def _shape_text(shape) -> str:
    return "[" + ",".join(str(n) for n in shape) + "]"


def _from_inputs(inputs, dtypes: dict, max_elements: int) -> dict:
    if not _is_named(inputs):
        if len(dtypes) > 1:
            raise JsonTensorError("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                  "required as per tensorinfo_map")
        alias = next(iter(dtypes))
        return {alias: to_array(inputs, dtypes[alias], max_elements)}
    arrays = {}
    for alias, dtype in sorted(dtypes.items()):
        if alias not in inputs:
            raise JsonTensorError(f"Missing named input: {alias} in 'inputs' object.")
        arrays[alias] = to_array(inputs[alias], dtype, max_elements)
    return arrays


def _jsonable(name: str, array: np.ndarray):
    """Output values for JSON: strings as text, or ``{"b64"}`` when the output's name ends in ``_bytes``."""
    if array.dtype == object:
        if name.endswith("_bytes"):
            convert = lambda b: {"b64": base64.b64encode(b).decode()}  # noqa: E731
        else:
            convert = lambda b: b.decode("utf-8", "replace")  # noqa: E731
        return np.frompyfunc(convert, 1, 1)(array).tolist() if array.size else array.tolist()
    if array.dtype.kind == "f" and array.dtype != np.float64:
        # The shortest decimal that reads back as the same float32 (0.2, not 0.20000000298023224), as TF Serving
        # writes floats; NaN and Infinity pass through json.dumps as TF Serving writes them.
        return array.astype(str).astype(np.float64).tolist()
    return array.tolist()


def predict_response(outputs: dict, form: str) -> dict:
    """Outputs as TF Serving answers: ``predictions`` (rows) or ``outputs`` (columns); one output goes unnamed."""
    names = sorted(outputs)
    if form == "columnar":
        if len(names) == 1:
            return {"outputs": _jsonable(names[0], outputs[names[0]])}
        return {"outputs": {name: _jsonable(name, outputs[name]) for name in names}}
    columns = {name: _jsonable(name, outputs[name]) for name in names}
    rows = {len(values) for values in columns.values()}
    if len(rows) != 1:
        raise JsonTensorError("Tensor name: outputs have inconsistent batch sizes: " + ", ".join(
            f"{name} {len(columns[name])}" for name in names))
    count = rows.pop()
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{name: columns[name][i] for name in names} for i in range(count)]}
