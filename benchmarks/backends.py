"""The three ways to run Bark that the benchmarks put side by side.

- `onnx-<precision>`: this runtime on a model directory.
- `reference`: the project's PyTorch reference loops (export/reference.py), KV cached.
- `transformers`: Hugging Face's BarkModel, called as its users call it.

Each backend runs a stage on the workload's fixed inputs, or a whole segment
(text in, audio out, stages chained). Torch backends are only imported inside
their own worker process, never beside ONNX Runtime.
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


class OnnxBackend(Backend):
    def __init__(self, model_dir: Path, threads: int | None = None, providers=None):
        from bark_onnx import Bark

        self.tts = Bark.load(model_dir, providers=providers, threads=threads)

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
    """The project's PyTorch modules and loops (KV cached), in fp32."""

    def __init__(self, checkpoint: Path, threads: int | None = None):
        import torch

        from bark_onnx.export.checkpoints import load_checkpoint
        from bark_onnx.export.models import build_models
        from bark_onnx.export.tokenizer import tokenizer_from_vocab

        if threads:
            torch.set_num_threads(threads)
        source = load_checkpoint(str(checkpoint))
        self.models = build_models(source)
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


class TransformersBackend(Backend):
    """transformers' BarkModel from the same checkpoint in the Hugging Face layout."""

    def __init__(self, checkpoint: Path, threads: int | None = None):
        import torch
        from transformers import BarkModel, BertTokenizerFast
        from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = BarkModel.from_pretrained(str(checkpoint)).eval()
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
                ids["input_ids"], attention_mask=ids["attention_mask"], semantic_generation_config=self.sem_cfg,
                do_sample=True, temperature=0.7, min_new_tokens=w.semantic_tokens, max_new_tokens=w.semantic_tokens)
        return out[0].numpy()

    def coarse(self, w, inputs):
        with self.torch.inference_mode():
            self.torch.manual_seed(SEED)
            out = self.model.coarse_acoustics.generate(
                self.torch.from_numpy(np.asarray(inputs["semantic"], dtype=np.int64))[None],
                semantic_generation_config=self.sem_cfg, coarse_generation_config=self.coarse_cfg,
                codebook_size=1024, do_sample=True, temperature=0.7)
        return out

    def fine(self, w, inputs):
        coarse = inputs["coarse"]
        if isinstance(coarse, np.ndarray):  # (2, T) codes -> HF's interleaved, offset tokens
            flat = (coarse + np.array([[0], [1024]])).ravel(order="F") + 10_000
            coarse = self.torch.from_numpy(flat.astype(np.int64))[None]
        with self.torch.inference_mode():
            self.torch.manual_seed(SEED)
            return self.model.fine_acoustics.generate(
                coarse, semantic_generation_config=self.sem_cfg, coarse_generation_config=self.coarse_cfg,
                fine_generation_config=self.fine_cfg, codebook_size=1024, temperature=0.5)

    def codec(self, w, inputs):
        fine = inputs["fine"]
        if isinstance(fine, np.ndarray):
            fine = self.torch.from_numpy(fine.astype(np.int64))[None]
        with self.torch.inference_mode():
            return self.model.codec_decode(fine)[0].numpy()


def make_backend(name: str, paths: dict[str, Path], threads: int | None = None, providers=None):
    """`onnx-fp32`, `onnx-int8`, ..., `reference`, `transformers`."""
    if name.startswith("onnx-"):
        return OnnxBackend(paths[name], threads=threads, providers=providers)
    if name == "reference":
        return ReferenceBackend(paths["checkpoint"], threads=threads)
    if name == "transformers":
        return TransformersBackend(paths["checkpoint"], threads=threads)
    raise ValueError(f"unknown backend {name!r}")
