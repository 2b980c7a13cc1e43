"""Old import paths (the ones the README showed before the package was split into layers) keep
working for one release, each with a DeprecationWarning naming the new home; the public API on the
package root stays."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import tinyset

# old path -> (new home, names a user imported from it)
MOVED = {
    "tinyset.pipeline": ("tinyset.jobs.distill", ["distill", "synthesize", "evaluate_run", "DistillResult", "needs_teacher"]),
    "tinyset.teacher": ("tinyset.teachers.supervised", ["get_teacher", "Teacher", "get_extra_teachers", "teacher_key",
                                                        "teacher_accuracy", "train_teacher", "cache_root", "_freeze"]),
    "tinyset.kd_run": ("tinyset.jobs.kd", ["run_kd", "default_out"]),
    "tinyset.compress": ("tinyset.jobs.compress", ["CompressConfig", "compress_artifact", "quantize_set"]),
    "tinyset.budget": ("tinyset.jobs.budget", ["parse_budget", "plan_budget", "set_bytes"]),
    "tinyset.plan": ("tinyset.jobs.plan", ["plan_distill"]),
    "tinyset.validate": ("tinyset.jobs.validate", ["check_config", "check_against_dataset"]),
    "tinyset.cli_quant": ("tinyset.cli.quant", ["register_quant_commands", "apply_budget", "add_budget_args"]),
    "tinyset.ssl.pipeline": ("tinyset.jobs.distill_ssl", ["distill_ssl", "load_pretrain_pairs", "transfer_run"]),
    "tinyset.ssl.teacher": ("tinyset.teachers.ssl", ["SSLConfig", "get_ssl_teacher", "teacher_features"]),
    "tinyset.ssl.barlow_twins": ("tinyset.teachers.barlow_twins", ["BarlowTwins", "barlow_twins_loss"]),
    "tinyset.ssl.registry": ("tinyset.teachers.registry", ["SSL_METHODS", "register_ssl"]),
    "tinyset.ssl.rotations": ("tinyset.data.views", ["all_views", "rotate", "unrotate", "QUARTER_TURNS"]),
    "tinyset.ssl.encoder": ("tinyset.models.encoder", ["encoder_from_model", "feature_dim", "head_in_features"]),
}


def _forget(monkeypatch, old: str) -> None:
    """Make the next import of ``old`` run its shim again (the warning is issued once per process)."""
    shim = "tinyset.ssl" if old.startswith("tinyset.ssl.") else old
    for name in [n for n in sys.modules if n == shim or n.startswith(shim + ".")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_warns_and_is_the_moved_module(monkeypatch, old):
    new, names = MOVED[old]
    _forget(monkeypatch, old)
    shim = old.rsplit(".", 1)[0] if old.startswith("tinyset.ssl.") else old
    with pytest.warns(DeprecationWarning, match=rf"{shim} is deprecated .*tinyset\."):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)  # the very module: names and monkeypatching as before
    for name in names:
        assert hasattr(module, name), f"{old}.{name}"


def test_old_ssl_package_names_still_import(monkeypatch):
    _forget(monkeypatch, "tinyset.ssl")
    with pytest.warns(DeprecationWarning, match="tinyset.ssl is deprecated"):
        from tinyset.ssl import SSL_METHODS, SSLConfig, encoder_from_model, feature_dim, get_ssl_teacher, teacher_features  # noqa: F401
    from tinyset.teachers import SSLConfig as new

    assert SSLConfig is new and "barlow_twins" in SSL_METHODS.names()


def test_warning_points_at_the_importer():
    """Outside pytest, Python shows a DeprecationWarning only when it is attributed to __main__:
    stacklevel=2 skips the import machinery and lands on the user's import line."""
    out = subprocess.run([sys.executable, "-c", "import tinyset.pipeline"], capture_output=True, text=True, check=True)
    assert "<string>:1: DeprecationWarning: tinyset.pipeline is deprecated" in out.stderr, out.stderr


def test_root_api_stays():
    assert callable(tinyset.distill) and callable(tinyset.load) and callable(tinyset.list_methods)
    assert tinyset.load_artifact is importlib.import_module("tinyset.artifact").load_artifact
    from tinyset._version import __version__

    assert tinyset.__version__ == __version__
    assert "e2d" in tinyset.list_methods()


def test_console_script_and_module_entry_points():
    from tinyset.cli import build_parser, main  # noqa: F401  (the console script is tinyset.cli:main)

    out = subprocess.run([sys.executable, "-m", "tinyset", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"tinyset {tinyset.__version__}"
