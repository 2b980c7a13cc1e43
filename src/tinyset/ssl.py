"""Deprecated: the old ``tinyset.ssl`` package was split by layer (kept for one release).

- ``tinyset.ssl.teacher`` -> ``tinyset.teachers.ssl``; ``tinyset.ssl.barlow_twins`` ->
  ``tinyset.teachers.barlow_twins``; ``tinyset.ssl.registry`` -> ``tinyset.teachers.registry``
- ``tinyset.ssl.pipeline`` -> ``tinyset.jobs.distill_ssl``
- ``tinyset.ssl.rotations`` -> ``tinyset.data.views``; ``tinyset.ssl.encoder`` -> ``tinyset.models.encoder``

``from tinyset.ssl import SSLConfig`` and ``import tinyset.ssl.pipeline`` still work (the old
submodule names are aliases of the moved modules), with a DeprecationWarning."""
import sys
import warnings

from .data import views as rotations
from .jobs import distill_ssl as pipeline
from .models import encoder
from .models.encoder import encoder_from_model, feature_dim
from .teachers import barlow_twins, registry
from .teachers import ssl as teacher
from .teachers.barlow_twins import BarlowTwins, barlow_twins_loss
from .teachers.registry import SSL_METHODS, register_ssl
from .teachers.ssl import SSLConfig, SSLTeacher, get_ssl_teacher, teacher_features

warnings.warn("tinyset.ssl is deprecated and will be removed in the next release; import tinyset.teachers "
              "(SSL teachers), tinyset.jobs.distill_ssl, tinyset.data.views or tinyset.models.encoder instead",
              DeprecationWarning, stacklevel=2)

for _name, _module in {"pipeline": pipeline, "teacher": teacher, "barlow_twins": barlow_twins, "registry": registry,
                       "rotations": rotations, "encoder": encoder}.items():
    sys.modules[f"{__name__}.{_name}"] = _module  # `import tinyset.ssl.pipeline` finds the moved module

__all__ = ["SSL_METHODS", "register_ssl", "BarlowTwins", "barlow_twins_loss", "encoder_from_model", "feature_dim",
           "SSLConfig", "SSLTeacher", "get_ssl_teacher", "teacher_features"]
