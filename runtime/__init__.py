"""bark-onnx: Suno's Bark text-to-audio on NumPy + ONNX Runtime."""

__version__ = "0.1.0"
