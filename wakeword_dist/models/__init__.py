"""Pure ``nn.Module`` models: log-mel front end, students, and the frozen HF teacher wrapper.

Nothing here imports accelerate, deepspeed or wandb; distributed concerns live in the recipe.
"""

from .frontend import LogMel, SpecAugment, as_batch_audio, compute_cmvn
from .teacher import TeacherModel, build_teacher_from_scratch, load_teacher, weights_sha256
from .registry import STUDENTS, Student, build_student, count_parameters, list_students

__all__ = [
    "LogMel", "SpecAugment", "as_batch_audio", "compute_cmvn",
    "TeacherModel", "build_teacher_from_scratch", "load_teacher", "weights_sha256",
    "STUDENTS", "Student", "build_student", "count_parameters", "list_students",
]
