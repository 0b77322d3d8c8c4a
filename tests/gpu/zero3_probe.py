"""ZeRO-3 teacher on one GPU (world size 1) vs the same teacher replicated; prints one JSON line.

Run by tests/gpu/test_gpu_teacher.py in its own process: DeepSpeed leaves process-group state
behind, and ``clean_exit`` must be the last statement of a process that ran it.
"""

import json

import torch

from gpu_helpers import audio, rel, teacher
from wakeword_dist.distill.placement import clean_exit, place_teacher

code = 1
try:
    x = audio()
    ref = teacher("fp16")(x)
    fn, decision = place_teacher(teacher("fp16", device="cpu"), placement="zero3", device=torch.device("cuda"),
                                 batch_size=8, clip_samples=16000, dtype=torch.float16, memory_share=0.5,
                                 world_size=1)
    z = fn(x)
    print(json.dumps({"placement": decision["placement"], "rel_err": rel(z, ref),
                      "local_param_numel": decision.get("zero3_local_param_numel")}), flush=True)
    code = 0
finally:
    clean_exit(code)
