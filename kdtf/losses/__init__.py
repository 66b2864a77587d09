"""Distillation losses: `loss(teacher_outputs, student_outputs)`."""
