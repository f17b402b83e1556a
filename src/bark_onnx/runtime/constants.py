"""Bark's fixed constants: token ids, rates and window sizes, and the names of Suno's checkpoint files.

These come from Suno's Bark and are the same for every checkpoint; the model
directory's config.json records them too, so a runtime can check that a model
was exported for the algorithm it implements. This module imports nothing: the
runtime and export both read it, and neither needs the other for it.
"""

CONTEXT_WINDOW_SIZE = 1024
SEMANTIC_RATE_HZ = 49.9
SEMANTIC_VOCAB_SIZE = 10_000
CODEBOOK_SIZE = 1024
N_COARSE_CODEBOOKS = 2
N_FINE_CODEBOOKS = 8
COARSE_RATE_HZ = 75
SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 320  # EnCodec 24 kHz hop: 24000 / 75

TEXT_ENCODING_OFFSET = 10_048
SEMANTIC_PAD_TOKEN = 10_000
SEMANTIC_EOS_TOKEN = SEMANTIC_PAD_TOKEN  # the pad token doubles as the semantic end of sequence
TEXT_PAD_TOKEN = 129_595
SEMANTIC_INFER_TOKEN = 129_599
COARSE_SEMANTIC_PAD_TOKEN = 12_048
COARSE_INFER_TOKEN = 12_050

MAX_TEXT_TOKENS = 256
MAX_SEMANTIC_HISTORY = 256
MAX_SEMANTIC_STEPS = 768
FINE_WINDOW = 1024
FINE_STRIDE = 512
FINE_HISTORY = 512

# Coarse tokens per semantic token (two codebooks interleaved): 3.006...
SEMANTIC_TO_COARSE_RATIO = COARSE_RATE_HZ / SEMANTIC_RATE_HZ * N_COARSE_CODEBOOKS

# Logits columns [start, stop) each graph returns (Bark's algorithm): the semantic loop reads the
# 10 000 semantic tokens and the EOS logit, the coarse loop the two codebooks' 2 x 1024 columns after
# the semantic vocabulary, the fine model one codebook's 1024 codes.
SEMANTIC_LOGITS = (0, SEMANTIC_VOCAB_SIZE + 1)
COARSE_LOGITS = (SEMANTIC_VOCAB_SIZE, SEMANTIC_VOCAB_SIZE + N_COARSE_CODEBOOKS * CODEBOOK_SIZE)
FINE_LOGITS = (0, CODEBOOK_SIZE)

# The columns [lo, hi) a causal graph's draw may take, by the index its `band` input gives (of the
# logits columns above): the semantic stage's 10 000 tokens with EOS (early stop on) or without;
# the coarse stage's codebook 0 or 1.
SEMANTIC_BANDS = ((0, SEMANTIC_VOCAB_SIZE + 1), (0, SEMANTIC_VOCAB_SIZE))
COARSE_BANDS = tuple((k * CODEBOOK_SIZE, (k + 1) * CODEBOOK_SIZE) for k in range(N_COARSE_CODEBOOKS))

# Suno's checkpoint files per model size and stage (bark-small and bark): the export reads them, the
# runtime's cache (model/cache.py) looks for them in Suno's own cache before it asks for an export
SUNO_FILES = {
    "small": {"semantic": "text.pt", "coarse": "coarse.pt", "fine": "fine.pt"},
    "large": {"semantic": "text_2.pt", "coarse": "coarse_2.pt", "fine": "fine_2.pt"},
}
