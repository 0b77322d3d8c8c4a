"""One rank of the 2-rank teacher test (started twice by ``run_ranks``): ZeRO-3 vs replicate
logits, parameter sharding, auto placement, annotate with both placements, annotate rerun, and
the clean exit the recipe uses. Results go to ``<out>/rank<r>.json`` for the test to check.

Usage: two_rank_program.py OUT_DIR SPLIT_DIR EXIT_MODE   (EXIT_MODE: clean | shutdown | plain)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from distributed_helpers import audio_batch, tiny_teacher
from wakeword_dist.distill.annotate import annotate_split
from wakeword_dist.distill.placement import local_param_numel, place_teacher, shutdown_teacher
from wakeword_dist.process_exit import PROCESS, end_process


def main(out_dir: Path, split_dir: Path, exit_mode: str) -> None:
    t_start = time.perf_counter()
    acc = Accelerator(cpu=True)
    assert acc.num_processes == 2, acc.num_processes
    rank = acc.process_index
    result: dict = {"rank": rank}
    place = dict(device=acc.device, batch_size=4, clip_samples=16000, dtype=torch.float32, world_size=2)

    audio = audio_batch(batch=3 + rank)  # ranks may feed different batch shapes
    reference = tiny_teacher()
    expected = reference(audio)
    result["n_params"] = sum(p.numel() for p in reference.parameters())
    result["n_param_tensors"] = len(list(reference.parameters()))

    t0 = time.perf_counter()
    zero3_fn, result["zero3_decision"] = place_teacher(tiny_teacher(), placement="zero3", memory_share=0.5, **place)
    result["zero3_init_s"] = time.perf_counter() - t0
    result["zero3_err"] = (zero3_fn(audio) - expected).abs().max().item()
    result["zero3_local_numel"] = local_param_numel(zero3_fn.module.module)
    result["lockstep"] = zero3_fn.lockstep

    # bf16, the configured default: DeepSpeed's bf16 mode vs a bf16 replica on the same rank
    bf16 = {**place, "dtype": torch.bfloat16}
    zero3_bf16, _ = place_teacher(tiny_teacher(), placement="zero3", memory_share=0.5, **bf16)
    replicate_bf16, _ = place_teacher(tiny_teacher(), placement="replicate", memory_share=0.5, **bf16)
    result["bf16_zero3_vs_replicate"] = (zero3_bf16(audio) - replicate_bf16(audio)).abs().max().item()
    result["bf16_vs_fp32"] = (zero3_bf16(audio) - expected).abs().max().item()

    auto_fn, result["auto_decision"] = place_teacher(tiny_teacher(), placement="auto", memory_share=1e-9, **place)
    result["auto_err"] = (auto_fn(audio) - expected).abs().max().item()

    replicate_fn, result["replicate_decision"] = place_teacher(tiny_teacher(), placement="replicate",
                                                               memory_share=0.5, **place)
    fingerprint = reference.fingerprint()
    annotate = dict(in_split_dir=split_dir, rank=rank, world_size=2, batch_size=4, device=acc.device,
                    barrier=acc.wait_for_everyone)
    t0 = time.perf_counter()
    result["annotate_zero3"] = annotate_split(zero3_fn, fingerprint, out_split_dir=out_dir / "zero3", **annotate)
    result["annotate_zero3_s"] = time.perf_counter() - t0
    result["annotate_zero3_rerun"] = annotate_split(zero3_fn, fingerprint, out_split_dir=out_dir / "zero3", **annotate)
    result["annotate_replicate"] = annotate_split(replicate_fn, fingerprint, out_split_dir=out_dir / "replicate",
                                                  **annotate)
    result["total_s"] = time.perf_counter() - t_start
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, default=str))

    if exit_mode == "clean":  # what the recipe does
        end_process(0, PROCESS, barrier=acc.wait_for_everyone)
    elif exit_mode == "shutdown":
        shutdown_teacher()
    # "plain" (and after "shutdown"): fall off the end, the interpreter tears everything down


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
