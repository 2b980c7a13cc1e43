"""Jobs: what a command does, end to end (the top layer under ``cli/``).

``distill`` (dataset -> teacher -> method -> artifact -> evaluation), ``distill_ssl`` (the
label-free methods), ``kd`` (teacher-to-student KD on a full dataset), ``compress`` (post-hoc
quantization of an artifact), ``budget`` (images per class and bits from a byte budget), ``plan``
(``--dry-run``) and ``validate`` (every name, type and range checked before any work). Jobs may
import every layer below them; nothing below imports a job. Import the module you need
(``from tinyset.jobs.distill import distill``); this package imports nothing itself."""
