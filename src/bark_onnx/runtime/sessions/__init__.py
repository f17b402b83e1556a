"""ONNX Runtime sessions: providers.py (which providers, where bound buffers live), gpu_options.py
(CUDA's and TensorRT's options), session.py (every session is made there), graph_check.py (the
graphs match their config), install.py (which onnxruntime is installed)."""
