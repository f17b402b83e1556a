"""bark-onnx: Suno's Bark text-to-audio on NumPy + ONNX Runtime.

    from bark_onnx import Bark
    tts = Bark.load("bark-small-onnx")
    audio = tts.generate("Hello [laughs]", voice="v2/en_speaker_6", seed=0)  # float32, 24 kHz

Suno's own API works too: `from bark_onnx import generate_audio, preload_models, SAMPLE_RATE`.
"""

__version__ = "0.1.0"

from .install import check_onnxruntime

check_onnxruntime()  # before the first `import onnxruntime`: says which extra to install

from .bark import Bark  # noqa: E402
from .compat import (  # noqa: E402
    SAMPLE_RATE, generate_audio, preload_models, save_as_prompt, semantic_to_waveform, text_to_semantic,
)
from .engine import CancelledError, EngineClosedError, Job, QueueFullError  # noqa: E402
from .errors import BarkOnnxError, CheckpointError, InputError, ModelDirError, VoiceError  # noqa: E402
from .options import CoarseOptions, FineOptions, GenerationOptions, SemanticOptions  # noqa: E402
from .result import Generation  # noqa: E402

__all__ = [
    "Bark", "Generation", "GenerationOptions", "SemanticOptions", "CoarseOptions", "FineOptions", "Job",
    "SAMPLE_RATE", "generate_audio", "preload_models", "save_as_prompt", "semantic_to_waveform", "text_to_semantic",
    "BarkOnnxError", "CheckpointError", "InputError", "ModelDirError", "VoiceError", "QueueFullError",
    "CancelledError", "EngineClosedError", "__version__",
]
