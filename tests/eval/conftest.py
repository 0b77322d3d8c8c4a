"""Fixtures with the stand-in students of tests/standins.py."""
import pytest

from tests.standins import ToneStudent


@pytest.fixture
def tone_student():
    return ToneStudent().eval()

