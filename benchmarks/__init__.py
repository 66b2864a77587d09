"""Speed benchmarks beside the `kdtf` library: `benchmarks.benchmark` (kdtf's steps
against hand-written loops and keras.distillation, `apps/benchmark.py`) and
`benchmarks/torch_kd.py` (a plain PyTorch KD loop, the GPU call's reference)."""
