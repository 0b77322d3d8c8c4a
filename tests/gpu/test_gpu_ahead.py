"""The teacher one batch ahead on a second CUDA stream (distill/ahead.py): the logits it hands
over are the serial ones, even while the main stream keeps writing memory, and the recipe with
distill.overlap_teacher trains like the serial one."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_side_stream_logits_equal_the_serial_ones_while_the_main_stream_works():
    from wakeword_dist.distill.ahead import TeacherAhead

    torch.manual_seed(0)
    w1 = torch.randn(16000, 2048, device="cuda") / 128
    w2 = torch.randn(2048, 4, device="cuda") / 45

    def teacher(x):  # a few ms of GEMM, long enough for the main stream to run beside it
        return torch.relu(x @ w1) @ w2

    ahead = TeacherAhead(teacher, torch.device("cuda"))
    audio = torch.randn(1024, 16000, device="cuda")
    expected = teacher(audio)
    ahead.launch(7, audio)
    busy = [torch.randn(4096, 4096, device="cuda") @ torch.randn(4096, 4096, device="cuda") for _ in range(4)]
    got_audio, logits = ahead.take(7)
    assert got_audio is audio and logits.device.type == "cuda"
    torch.testing.assert_close(logits, expected)
    assert ahead.take(8) is None, "nothing was launched for step 8"
    ahead.launch(9, audio)
    assert ahead.take(10) is None and ahead.take(9) is None, "a launch for another step is dropped"
    del busy
