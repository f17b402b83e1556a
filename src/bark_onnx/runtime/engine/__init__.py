"""Many requests on one model: job.py (the caller's handle), scheduler.py (each request's state and
the policy that admits them), core.py (`Engine.step()` and the thread around it), executor.py (the
graph calls, batched), decoder.py (the KV-cache rows of the causal graphs)."""
