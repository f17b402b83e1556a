"""The three ways to run Bark that the benchmarks put side by side.

- `onnx-<precision>`: this runtime on a model directory.
- `reference`: the project's PyTorch reference loops (export/reference.py), KV cached.
- `transformers`: Hugging Face's BarkModel, called as its users call it.

Each backend runs a stage on the workload's fixed inputs, or a whole segment
(text in, audio out, stages chained). Torch backends are only imported inside
their own worker process, never beside ONNX Runtime; they run on the CPU in
fp32 or, with `--torch-device cuda`, on the GPU in fp16 (devices.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .workload import BATCH, SEED, TEXT, Workload


class Backend:
    """A segment is the four stages chained: text in, audio out."""

    def segment(self, w: Workload, inputs):
        chained = {"semantic": self.semantic(w, inputs)}
        chained["coarse"] = self.coarse(w, chained)
        chained["fine"] = self.fine(w, chained)
        return self.codec(w, chained)

    device = None  # torch backends: the torch.device they run on

    def gpu_memory(self) -> tuple[float | None, str | None]:
        """(MiB, how it was measured) of GPU memory held, or (None, None) off the GPU."""
        return None, None

    def runs_on(self) -> str:
        """Where the backend runs, for the results: 'cpu fp32', 'cuda fp16', or ONNX Runtime's providers."""
        dtype = "fp16" if self.device is not None and self.device.type == "cuda" else "fp32"
        return f"{self.device.type} {dtype}"


class OnnxBackend(Backend):
    def __init__(self, model_dir: Path, threads: int | None = None, providers=None, cuda_graph: bool | None = None):
        from bark_onnx import Bark

        from .devices import OnnxGpuMemory

        self.memory = OnnxGpuMemory()  # its baseline: before the sessions exist
        self.tts = Bark.load(model_dir, providers=providers, threads=threads, cuda_graph=cuda_graph)

    def gpu_memory(self):
        return self.memory.read() if self.tts.placement.on_gpu else (None, None)

    def runs_on(self) -> str:
        from bark_onnx.runtime.sessions.providers import short

        return "+".join(short(p) for p in self.tts.placement.running)

    def semantic(self, w: Workload, inputs):
        return self.tts.text_to_semantic(TEXT, temperature=0.7, seed=SEED, allow_early_stop=False,
                                         max_gen_duration_s=w.max_gen_duration_s, silent=True)

    def coarse(self, w: Workload, inputs):
        return self.tts.semantic_to_coarse(inputs["semantic"], temperature=0.7, seed=SEED, silent=True)

    def fine(self, w: Workload, inputs):
        return self.tts.coarse_to_fine(inputs["coarse"], temperature=0.5, seed=SEED)

    def codec(self, w: Workload, inputs):
        return self.tts.decode(inputs["fine"])

    def first_audio(self, w: Workload, inputs):
        """Time to the first streamed chunk of the segment."""
        job = self.tts.stream(TEXT, seed=SEED, allow_early_stop=False, max_gen_duration_s=w.max_gen_duration_s)
        first = next(iter(job))
        job.cancel()
        return first

    def semantic_b1(self, w: Workload, inputs):
        return self.tts.text_to_semantic([TEXT], temperature=0.7, seed=SEED, allow_early_stop=False,
                                         max_gen_duration_s=w.max_gen_duration_s, silent=True)

    def semantic_b8(self, w: Workload, inputs):
        """Eight texts through batched graph calls."""
        texts = [f"{TEXT} ({i})" for i in range(BATCH)]
        return self.tts.text_to_semantic(texts, temperature=0.7, seed=SEED, allow_early_stop=False,
                                         max_gen_duration_s=w.max_gen_duration_s, silent=True)


class ReferenceBackend(Backend):
    """The project's PyTorch modules and loops (KV cached): fp32 on the CPU, fp16 on CUDA."""

    def __init__(self, checkpoint: Path, threads: int | None = None, device: str = "cpu"):
        import torch

        from bark_onnx.export.checkpoints import load_checkpoint
        from bark_onnx.export.models import build_models
        from bark_onnx.export.tokenizer import tokenizer_from_vocab

        from .devices import OnDevice, torch_device

        if threads:
            torch.set_num_threads(threads)
        self.device, dtype = torch_device(device)
        source = load_checkpoint(str(checkpoint))
        self.models = build_models(source)
        if self.device.type != "cpu":
            self.models = {stage: OnDevice(m, self.device, dtype) for stage, m in self.models.items()}
        tok = tokenizer_from_vocab(source.tokenizer)
        self.tokenize = lambda text: tok.encode(text, add_special_tokens=False).ids
        self.gen = torch.Generator().manual_seed(SEED)

    def semantic(self, w, inputs):
        from bark_onnx.export import reference as R

        return R.generate_semantic(self.models["semantic"], self.tokenize, TEXT, temp=0.7, allow_early_stop=False,
                                   max_gen_duration_s=w.max_gen_duration_s, gen=self.gen)

    def coarse(self, w, inputs):
        from bark_onnx.export import reference as R

        return R.generate_coarse(self.models["coarse"], inputs["semantic"], temp=0.7, gen=self.gen)

    def fine(self, w, inputs):
        from bark_onnx.export import reference as R

        return R.generate_fine(self.models["fine"], inputs["coarse"], temp=0.5, gen=self.gen)

    def codec(self, w, inputs):
        from bark_onnx.export import reference as R

        return R.decode(self.models["codec"], inputs["fine"])

    def gpu_memory(self):
        from .devices import torch_gpu_mb

        return torch_gpu_mb(self.device)


class TransformersBackend(Backend):
    """transformers' BarkModel from the same checkpoint in the Hugging Face layout: fp32 on the CPU,
    fp16 on CUDA (as its users run it on a GPU)."""

    def __init__(self, checkpoint: Path, threads: int | None = None, device: str = "cpu"):
        import torch
        from transformers import BarkModel, BertTokenizerFast
        from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

        from .devices import torch_device

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device, dtype = torch_device(device)
        self.model = BarkModel.from_pretrained(str(checkpoint)).to(device=self.device, dtype=dtype).eval()
        self.model.generation_config = BarkGenerationConfig()  # Bark's defaults, as the hub repos carry
        cfg = self.model.generation_config
        self.sem_cfg, self.coarse_cfg, self.fine_cfg = cfg.semantic_config, cfg.coarse_acoustics_config, \
            cfg.fine_acoustics_config
        self.tokenizer = BertTokenizerFast(str(Path(checkpoint) / "vocab.txt"), do_lower_case=False)

    def semantic(self, w, inputs):
        ids = self.tokenizer(TEXT, add_special_tokens=False, return_tensors="pt", padding="max_length",
                             max_length=256, truncation=True)
        with self.torch.inference_mode():
            self.torch.manual_seed(SEED)
            out = self.model.semantic.generate(
                ids["input_ids"].to(self.device), attention_mask=ids["attention_mask"].to(self.device),
                semantic_generation_config=self.sem_cfg, do_sample=True, temperature=0.7,
                min_new_tokens=w.semantic_tokens, max_new_tokens=w.semantic_tokens)
        return out[0].cpu().numpy()

    def coarse(self, w, inputs):
        with self.torch.inference_mode():
            self.torch.manual_seed(SEED)
            out = self.model.coarse_acoustics.generate(
                self.torch.from_numpy(np.asarray(inputs["semantic"], dtype=np.int64))[None].to(self.device),
                semantic_generation_config=self.sem_cfg, coarse_generation_config=self.coarse_cfg,
                codebook_size=1024, do_sample=True, temperature=0.7)
        return self._done(out)

    def fine(self, w, inputs):
        coarse = inputs["coarse"]
        if isinstance(coarse, np.ndarray):  # (2, T) codes -> HF's interleaved, offset tokens
            flat = (coarse + np.array([[0], [1024]])).ravel(order="F") + 10_000
            coarse = self.torch.from_numpy(flat.astype(np.int64))[None]
        with self.torch.inference_mode():
            self.torch.manual_seed(SEED)
            return self._done(self.model.fine_acoustics.generate(
                coarse.to(self.device), semantic_generation_config=self.sem_cfg,
                coarse_generation_config=self.coarse_cfg, fine_generation_config=self.fine_cfg, codebook_size=1024,
                temperature=0.5))

    def codec(self, w, inputs):
        fine = inputs["fine"]
        if isinstance(fine, np.ndarray):
            fine = self.torch.from_numpy(fine.astype(np.int64))[None]
        with self.torch.inference_mode():
            return self.model.codec_decode(fine.to(self.device))[0].float().cpu().numpy()

    def _done(self, out):
        """A stage's output stays on the device for the next stage; its time includes the queued work."""
        from .devices import synchronize

        synchronize(self.device)
        return out

    def gpu_memory(self):
        from .devices import torch_gpu_mb

        return torch_gpu_mb(self.device)


def make_backend(name: str, paths: dict[str, Path], threads: int | None = None, providers=None,
                 torch_device: str = "cpu"):
    """`onnx-fp32`, `onnx-int8`, ..., `reference`, `transformers`."""
    if name.startswith("onnx-"):
        return OnnxBackend(paths[name], threads=threads, providers=providers)
    if name == "reference":
        return ReferenceBackend(paths["checkpoint"], threads=threads, device=torch_device)
    if name == "transformers":
        return TransformersBackend(paths["checkpoint"], threads=threads, device=torch_device)
    raise ValueError(f"unknown backend {name!r}")
