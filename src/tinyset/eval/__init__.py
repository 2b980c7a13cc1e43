"""Evaluation: one trainer for teachers, students and KD (``trainer``), the student protocol beside
the random real subset (``protocol``), learning-rate schedules (``schedules``) and transfer
evaluation of self-supervised sets (``transfer``). Import the module you need; this package imports
nothing itself."""
