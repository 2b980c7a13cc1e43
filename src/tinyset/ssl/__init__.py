"""Self-supervised teachers: encoders trained without labels (Barlow Twins), cached and resumable,
and their cached features of a dataset (and of its predefined rotated views)."""
from .barlow_twins import BarlowTwins, barlow_twins_loss  # noqa: F401  (registration)
from .encoder import encoder_from_model, feature_dim
from .registry import SSL_METHODS, register_ssl
from .teacher import SSLConfig, SSLTeacher, get_ssl_teacher, teacher_features

__all__ = ["SSL_METHODS", "register_ssl", "BarlowTwins", "barlow_twins_loss", "encoder_from_model", "feature_dim",
           "SSLConfig", "SSLTeacher", "get_ssl_teacher", "teacher_features"]
