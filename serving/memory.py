"""A bound on the memory the requests being served hold at once (kcnn's guard; TF Serving has none).

Each request's working memory is estimated before its tensors are built, from what it *declares*:
numeric tensors by their declared shape (the array, plus the copy the signature call makes), encoded
images by the width and height in their headers (decoded to RGB bytes). A request waits until its
estimate fits beside the ones in flight; one larger than the whole bound waits until nothing else is
in flight and then runs alone, so every request the element and pixel limits admit is still served,
but N hostile requests at once cannot cost N times one.
"""

from __future__ import annotations

import io
import threading
import time

from PIL import Image

DEFAULT_MEMORY_MB = 160  # one 4096x4096x3 uint8 array request (100 MB estimated) at a time, or three such PNGs
COPIES = 2  # a numeric input is held as the parsed array and as the tensor the signature receives
WAIT_SECONDS = 60.0  # a request waits at most this long for room, then gets RESOURCE_EXHAUSTED


class MemoryBusy(Exception):
    """No room for a request within its wait."""


def decoded_bytes(data: bytes) -> int:
    """Bytes an encoded image decodes to as RGB (from its header alone); the string's own size if it is none."""
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only; no pixels are decoded
            width, height = image.size
    except Exception:  # noqa: BLE001 - not an image PIL knows: the graph decides, the string costs its size
        return len(data)
    return len(data) + width * height * 3


def array_bytes(array) -> int:
    """The working memory of a parsed input (REST): numeric arrays twice their size, strings as decoded images."""
    if array.dtype == object:
        return sum(decoded_bytes(value) for value in array.ravel() if isinstance(value, bytes))
    return array.nbytes * COPIES


class RequestMemory:
    """Admission by estimated bytes: ``amount = acquire(estimate)``, the request, then ``release(amount)``."""

    def __init__(self, limit_bytes: int):
        self.limit = int(limit_bytes)
        self.in_flight = 0
        self.peak = 0  # the largest sum held at once (tests and benchmarks read it)
        self._room = threading.Condition()

    def acquire(self, estimate: int, timeout: float = WAIT_SECONDS) -> int:
        """Wait for room for ``estimate`` bytes (at most the whole bound); the amount held, for ``release``."""
        amount = max(0, min(int(estimate), self.limit))
        deadline = time.monotonic() + timeout
        with self._room:
            while self.in_flight and self.in_flight + amount > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MemoryBusy(f"kcnn serve is holding {self.in_flight / 2**20:.0f} MB of requests and this one "
                                     f"needs about {amount / 2**20:.0f} MB of --max_request_memory_mb="
                                     f"{self.limit / 2**20:.0f}; retry later or send smaller images")
                self._room.wait(left)
            self.in_flight += amount
            self.peak = max(self.peak, self.in_flight)
        return amount

    def release(self, amount: int) -> None:
        with self._room:
            self.in_flight -= amount
            self._room.notify_all()
