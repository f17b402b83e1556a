"""The runtime: NumPy + ONNX Runtime, no torch, and nothing of export (an exporter, where one is
needed, comes as an argument). Its rooms, in the order a request meets them:

    request.py, options.py  what to say and how: `Request` (made and checked once), every stage's options
    bark.py                 `Bark`: load a model directory; `submit(request)` and its shorthands
    stages/                 the request's life as generators of graph work: text, semantic, coarse, fine,
                            codec, streaming, long text (work.py is the contract with the engine)
    engine/                 many requests on one model: the caller's `Job`, the scheduler's state and
                            policy, `Engine.step()`, the executor that batches graph calls, the KV decoder
    sessions/               ONNX Runtime sessions: providers, GPU options, the graph check
    model/                  the model directory: config, hub and offline switch, cache, voices
    result.py, audio.py     what comes out: a `Generation`, WAV and PCM files
    commands.py             `bark-onnx say` and `voices`
"""
