"""Many requests on one model: job.py (the caller's handle), scheduler.py (each request's state and
the policy that admits them and paces their background runs), core.py (`Engine.step()` and the
thread around it), executor.py (the graph calls, batched), runs.py (the decoding runs of a stage as
arrays by cache row, and their verbs), decoder.py (the KV-cache rows of the causal graphs)."""
