"""Teachers: the networks a method distils from and students learn from.

- ``supervised``: a classifier trained once, cached by dataset + model + config hash, resumable,
  or the user's own checkpoint / ImageNet-pretrained torchvision weights (``get_teacher``).
- ``ssl``: self-supervised encoders trained without labels, cached and resumable, and their cached
  features of a dataset and of its predefined rotated views (``get_ssl_teacher``,
  ``teacher_features``).
- ``barlow_twins``: the Barlow Twins objective, registered in ``registry.SSL_METHODS``
  (``tinyset teacher --ssl NAME``); a new objective is one file with ``@register_ssl("name")``,
  imported below.

Teachers sit above data/, models/, kd/ and eval/ (their trainer) and below methods/ and jobs/."""
from .barlow_twins import BarlowTwins, barlow_twins_loss  # noqa: F401  (registration)
from .registry import SSL_METHODS, register_ssl
from .ssl import SSLConfig, SSLTeacher, get_ssl_teacher, teacher_features
from .supervised import Teacher, get_extra_teachers, get_teacher, teacher_accuracy

__all__ = ["SSL_METHODS", "register_ssl", "BarlowTwins", "barlow_twins_loss", "SSLConfig", "SSLTeacher",
           "get_ssl_teacher", "teacher_features", "Teacher", "get_teacher", "get_extra_teachers", "teacher_accuracy"]
