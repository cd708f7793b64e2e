"""The input preprocessing each checkpoint was trained with, as data, and one function that applies it."""

from __future__ import annotations

from dataclasses import dataclass

from keras import ops


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint expects its pixels.

    ``mode``: "caffe" (RGB -> BGR, subtract the ImageNet mean in 0-255 units), "tf"
    (scale to [-1, 1]) or "torch" (scale to [0, 1], subtract ``mean``, divide by ``std``).
    ``resize`` is the shorter side before a centre crop of ``crop`` pixels
    (``resize == crop``: resize straight to the input size).
    """

    mode: str
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    resize: int = 224
    crop: int = 224

    @property
    def crop_fraction(self) -> float:
        return self.crop / self.resize

    def unit_range(self) -> dict:
        """The same normalisation for pixels scaled to [0, 1], as kcnn's pipelines apply it.

        Keys ``mean`` and ``std`` (per channel, in the model's channel order), ``channel_order``
        ("bgr" for caffe mode: reverse RGB first) and ``crop_fraction``.
        """
        if self.mode == "caffe":
            mean, std, order = tuple(m / 255.0 for m in self.mean), (1.0 / 255.0,), "bgr"
        elif self.mode == "tf":
            mean, std, order = (0.5,), (0.5,), "rgb"
        else:
            mean, std, order = tuple(self.mean), tuple(self.std), "rgb"
        return {"mean": mean, "std": std, "channel_order": order, "crop_fraction": self.crop_fraction}

    def normalize(self, images):
        """Map RGB pixels in [0, 255] (channels last) to what the checkpoint expects; keras.ops, any backend."""
        images = ops.cast(images, "float32")
        if self.mode == "caffe":
            return images[..., ::-1] - ops.convert_to_tensor(self.mean, "float32")
        if self.mode == "tf":
            return images / 127.5 - 1.0
        return (images / 255.0 - ops.convert_to_tensor(self.mean, "float32")) / ops.convert_to_tensor(self.std, "float32")


# keras.applications.imagenet_utils' three modes; torchvision's ImageClassification preset (resize 256, crop 224).
CAFFE = Preprocessing("caffe", mean=(103.939, 116.779, 123.68))
TF = Preprocessing("tf")
TORCH = Preprocessing("torch", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize=256, crop=224)
KERAS_TORCH = Preprocessing("torch", mean=TORCH.mean, std=TORCH.std)  # keras.applications' DenseNet
TORCH_TF = Preprocessing("tf", resize=256, crop=224)  # torchvision's GoogLeNet (transform_input=True)
UNIT = Preprocessing("torch")  # pixels / 255 only (tf-keras' RegNet: a Rescaling(1 / 255) in the model)
