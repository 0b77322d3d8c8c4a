"""Fixtures with the stand-in students of eval_standins.py."""
import pytest

from eval_standins import ToneStudent


@pytest.fixture
def tone_student():
    return ToneStudent().eval()

