"""bark-onnx: Suno's Bark text-to-audio on NumPy + ONNX Runtime.

    from bark_onnx import Bark, Request
    tts = Bark.load("bark-small-onnx")
    audio = tts.generate("Hello [laughs]", voice="v2/en_speaker_6", seed=0)  # float32, 24 kHz
    job = tts.submit(Request.make("Hello", stream=True, seed=0))             # the primitive: a Job

Suno's own API works too: `from bark_onnx import generate_audio, preload_models, SAMPLE_RATE`.
"""

from .version import __version__

from .runtime.sessions.install import check_onnxruntime

check_onnxruntime()  # before the first `import onnxruntime`: says which extra to install

from .runtime.bark import Bark  # noqa: E402
from .compat import (  # noqa: E402
    SAMPLE_RATE, generate_audio, preload_models, save_as_prompt, semantic_to_waveform, text_to_semantic,
)
from .runtime.engine.job import Job  # noqa: E402
from .runtime.errors import (  # noqa: E402
    BarkOnnxError, CancelledError, CheckpointError, EngineClosedError, InputError, ModelDirError, QueueFullError,
    VoiceError,
)
from .runtime.options import CoarseOptions, FineOptions, GenerationOptions, SemanticOptions  # noqa: E402
from .runtime.request import LongText, Request  # noqa: E402
from .runtime.result import Generation  # noqa: E402

__all__ = [
    "Bark", "Request", "LongText", "Generation", "GenerationOptions", "SemanticOptions", "CoarseOptions", "FineOptions", "Job",
    "SAMPLE_RATE", "generate_audio", "preload_models", "save_as_prompt", "semantic_to_waveform", "text_to_semantic",
    "BarkOnnxError", "CheckpointError", "InputError", "ModelDirError", "VoiceError", "QueueFullError",
    "CancelledError", "EngineClosedError", "__version__",
]
