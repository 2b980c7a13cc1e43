"""The distilled-set artifact: one versioned on-disk format shared by every method.

An artifact is a directory holding ``manifest.json`` (what produced it, how big it is, checksums),
``tensors.safetensors`` (the synthetic images, labels and any other payloads) and ``preview.png``.
Because every method writes the same format, evaluation, export and size comparisons never need to
know which method ran.

Writes are atomic: everything goes into a hidden temp directory beside ``out_dir`` and is renamed
into place, so a crash never leaves a half-written artifact under the real name. Loads verify the
format version, the tensors file's sha256 and that the stored tensors match the manifest, so a
changed or corrupted file fails loudly with a one-line :class:`TinysetError`."""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import safetensors.torch
import torch

from ..errors import TinysetError
from ..utils.files import sha256_file
from ..utils.setfile import FORMAT_VERSION, set_file_metadata, soft_file_metadata
from .preview import make_grid_image

log = logging.getLogger(__name__)

# FORMAT_VERSION 2: components with roles + a named decoder; 1 (pixels only) still loads
MANIFEST_FILE = "manifest.json"
TENSORS_FILE = "tensors.safetensors"  # the set file: components + the decoder in its header
SOFT_FILE = "soft_labels.safetensors"  # optional: stored soft labels (the ``stored`` label mode)
PREVIEW_FILE = "preview.png"
LABEL_MODES = ("hard", "stored", "teacher")  # what a student learns from, besides the set



# --------------------------------------------------------------------------------------------
# Atomic directory writes (shared with export.py)
# --------------------------------------------------------------------------------------------


def _fsync_path(path: Path) -> None:
    """Flush a file or directory to disk so a rename never publishes data still in the page cache."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_directory(
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
    what: str = "artifact",
) -> Iterator[Path]:
    """Yield a fresh temp directory beside ``out_dir``; on normal exit rename it to ``out_dir``.

    On any exception the temp directory is removed and ``out_dir`` is untouched. With
    ``overwrite``, an existing ``out_dir`` is renamed aside, the new one renamed in, and only then
    the old one deleted, so a failure in between restores the old directory instead of losing
    both. ``replaceable(path)`` guards overwrite against deleting a directory that is not ours
    (e.g. a mistyped ``--out .``)."""
    out_dir = Path(out_dir)
    parent = out_dir.parent
    name = out_dir.name
    if not name or name in (".", ".."):
        raise TinysetError(f"output path {str(out_dir)!r} must name a directory to create")

    def check_existing() -> bool:
        if not (out_dir.exists() or out_dir.is_symlink()):
            return False
        if not overwrite:
            raise TinysetError(f"{out_dir} already exists; use overwrite (--overwrite) to replace it")
        if not out_dir.is_dir() or out_dir.is_symlink():
            raise TinysetError(f"{out_dir} exists and is not a directory; refusing to replace it")
        if replaceable is not None and not replaceable(out_dir):
            raise TinysetError(f"{out_dir} exists and does not look like a tinyset {what}; refusing to replace it")
        return True

    check_existing()  # fail before doing any work
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                _fsync_path(p)
        _fsync_path(tmp)
        if check_existing():  # re-check: something may have appeared while we were writing
            old = parent / f".{name}.old-{secrets.token_hex(4)}"
            os.replace(out_dir, old)
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old, out_dir)
                raise
            _remove(old)
            if old.exists():
                log.warning("could not delete the replaced %s at %s; remove it by hand", what, old)
        else:
            os.replace(tmp, out_dir)
        _fsync_path(parent)
    except BaseException:
        _remove(tmp)
        raise


def _looks_like_artifact(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file() or not any(path.iterdir())


# --------------------------------------------------------------------------------------------
# Save
# --------------------------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if hasattr(obj, "tolist"):  # tensors, numpy arrays and numpy scalars
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _to_json(manifest: Mapping[str, Any]) -> str:
    try:
        return json.dumps(manifest, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as e:
        raise TinysetError(f"manifest is not JSON-serialisable: {e}") from None


def _prepare_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; aliases are cloned because safetensors refuses shared storage."""
    if not tensors:
        raise TinysetError("an artifact needs at least one tensor; got none")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise TinysetError(f"tensor names must be non-empty strings, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise TinysetError(f"tensor {name!r} is a {type(t).__name__}, not a torch.Tensor")
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


_DEFAULT_ROLES = {"images": "data", "vectors": "data", "labels": "labels", "targets": "targets", "codes": "codes"}


def _default_role(name: str) -> str:
    return _DEFAULT_ROLES.get(name, "quantizer" if name.startswith("q.") else "extra")


def _component(name: str, t: torch.Tensor, declared_bits: Any) -> dict[str, Any]:
    """Size record for one tensor. ``bits`` is the width of one stored value: the dtype's width, or
    for a bit-packed uint8 payload the caller-declared width (1..8) of the values packed inside."""
    nbytes = t.numel() * t.element_size()
    if declared_bits is None:
        bits = t.element_size() * 8
    else:
        if isinstance(declared_bits, bool) or not isinstance(declared_bits, int) or not 1 <= declared_bits <= 8:
            raise TinysetError(f"manifest bits[{name!r}] must be an integer from 1 to 8, got {declared_bits!r}")
        if t.dtype != torch.uint8:
            raise TinysetError(f"manifest bits[{name!r}] declares a bit-packed payload but the tensor is {_dtype_name(t.dtype)}, not uint8")
        bits = declared_bits
    return {"dtype": _dtype_name(t.dtype), "shape": list(t.shape), "bits": bits, "bytes": nbytes}


_COMPUTED = ("set_bytes", "student_bytes", "label_bytes", "soft_labels")


def _tinyset_version() -> str:
    from .._version import __version__

    return __version__


def save_artifact(
    out_dir: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    manifest: Mapping[str, Any],
    preview: torch.Tensor | None = None,
    preview_labels: torch.Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    decoder: str = "pixels",
    decoder_config: Mapping[str, Any] | None = None,
    roles: Mapping[str, str] | None = None,
    soft_labels: tuple[Mapping[str, torch.Tensor], Mapping[str, Any]] | None = None,
) -> Path:
    """Write an artifact directory atomically and return its path.

    ``tensors`` are the stored *components*; ``decoder`` (a registered name, see
    ``artifact.decoders``) with ``decoder_config`` turns them into what a student trains on, and is
    run once here so an undecodable artifact is never written. ``roles`` names each component's
    job (``data``, ``codes``, ``quantizer``, ``labels``, ...; defaults by name).
    ``preview="decoded"`` previews the decoded images.

    ``manifest`` is the caller's provenance (dataset, dataset_info, class names, normalisation,
    image_shape, ipc, method, method_config, seed, teacher, wall_time_seconds, ...). An optional
    ``manifest["bits"] = {name: 1..8}`` marks uint8 tensors as bit-packed payloads so the recorded
    size is honest; it is moved into ``components`` rather than stored twice. This function adds
    ``format_version``, ``tinyset_version``, ``created``, ``components``, ``total_bytes``,
    ``total_bits`` (= 8 * total_bytes, the exact payload size) and ``checksums``, and the two byte
    counts (``artifact.sizes``): ``set_bytes`` (the size of ``tensors.safetensors`` on disk: the
    components, the safetensors header and the decoder, which the header carries so the file
    decodes on its own) and ``student_bytes`` = ``set_bytes`` + ``label_bytes[label_mode]``.
    ``label_bytes`` holds what each label mode adds: ``hard`` 0, ``stored`` the size of
    ``soft_labels.safetensors`` (written from ``soft_labels`` = (tensors, config) of
    ``quant.soft_labels.encode_soft_labels``), ``teacher`` the teacher's bytes when the caller's
    ``manifest["teacher_bytes"]`` gives them. ``manifest["label_mode"]`` picks the mode; by default
    ``stored`` with soft labels, else ``teacher`` with teacher bytes, else ``hard``.

    ``preview`` ([N, C, H, W] in [0, 1]) is rendered to ``preview.png`` (rows by
    ``preview_labels``, defaulting to ``tensors["labels"]`` when ``preview`` is ``tensors["images"]``);
    2-D (vector) previews are skipped because there is no picture to draw."""
    prepared = _prepare_tensors(tensors)
    caller = dict(manifest)
    for key in _COMPUTED:  # recomputed from what is written (a copied manifest's are stale)
        caller.pop(key, None)
    declared = caller.pop("bits", None) or {}
    if not isinstance(declared, Mapping):
        raise TinysetError(f"manifest bits must map tensor names to bit widths, got {type(declared).__name__}")
    unknown = sorted(set(declared) - set(prepared))
    if unknown:
        raise TinysetError(f"manifest bits names tensors that are not saved: {', '.join(map(str, unknown))}")
    if class_names is not None:
        caller.setdefault("class_names", list(class_names))
        caller.setdefault("class_to_idx", {n: i for i, n in enumerate(class_names)})
    caller.setdefault("torch_version", torch.__version__)

    from .decoders import get_decoder

    dcfg = dict(decoder_config or {})
    try:
        decoded = get_decoder(decoder).decode(prepared, dcfg)
    except TinysetError:
        raise
    except Exception as e:  # a decoder bug or bad components must fail before anything is written
        raise TinysetError(f"decoder {decoder!r} cannot decode these components: {type(e).__name__}: {e}") from None
    if isinstance(preview, str):
        if preview != "decoded":
            raise TinysetError(f"preview must be a tensor, None or 'decoded', got {preview!r}")
        preview, preview_labels = decoded.get("images", decoded.get("vectors")), decoded.get("labels")
    roles = dict(roles or {})
    components = {}
    for n, t in prepared.items():
        components[n] = {**_component(n, t, declared.get(n)), "role": roles.get(n) or _default_role(n)}
    total_bytes = sum(c["bytes"] for c in components.values())
    label_mode = caller.get("label_mode") or ("stored" if soft_labels is not None else
                                              "teacher" if caller.get("teacher_bytes") else "hard")
    if label_mode not in LABEL_MODES:
        raise TinysetError(f"manifest label_mode must be one of {', '.join(LABEL_MODES)}, got {label_mode!r}")
    if label_mode == "stored" and soft_labels is None:
        raise TinysetError("label_mode 'stored' needs soft labels to store")
    if label_mode == "teacher" and not caller.get("teacher_bytes"):
        raise TinysetError("label_mode 'teacher' needs manifest['teacher_bytes'] (artifact.sizes.teacher_bytes)")
    caller["label_mode"] = label_mode
    soft_tensors = _prepare_tensors(soft_labels[0]) if soft_labels is not None else None
    full: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tinyset_version": _tinyset_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    full.update({k: v for k, v in caller.items() if k not in full})
    full.update(decoder={"name": decoder, "config": dcfg}, components=components, total_bytes=total_bytes, total_bits=8 * total_bytes)
    _to_json(full)  # fail on unserialisable provenance before writing anything

    out_dir = Path(out_dir)
    with atomic_directory(out_dir, overwrite=overwrite, replaceable=_looks_like_artifact, what="artifact") as tmp:
        safetensors.torch.save_file(prepared, str(tmp / TENSORS_FILE), metadata=set_file_metadata(decoder, dcfg))
        checksums = {TENSORS_FILE: sha256_file(tmp / TENSORS_FILE)}
        set_bytes = (tmp / TENSORS_FILE).stat().st_size
        label_bytes = {"hard": 0}
        if soft_tensors is not None:
            scfg = dict(soft_labels[1])
            safetensors.torch.save_file(soft_tensors, str(tmp / SOFT_FILE), metadata=soft_file_metadata(scfg))
            checksums[SOFT_FILE] = sha256_file(tmp / SOFT_FILE)
            label_bytes["stored"] = (tmp / SOFT_FILE).stat().st_size
            full["soft_labels"] = {**scfg, "bytes": label_bytes["stored"]}
        if caller.get("teacher_bytes"):
            label_bytes["teacher"] = int(caller["teacher_bytes"]["bytes"])
        full.update(set_bytes=set_bytes, label_bytes=label_bytes, student_bytes=set_bytes + label_bytes[label_mode])
        if preview is not None:
            if preview.dim() == 2:
                log.info("preview skipped: %s holds vectors, not images", out_dir)
            else:
                names = class_names if class_names is not None else caller.get("class_names")
                if preview_labels is None and preview is tensors.get("images") and decoder == "pixels":
                    preview_labels = tensors.get("labels")  # the common case: preview the set itself
                make_grid_image(preview, preview_labels, names).save(tmp / PREVIEW_FILE, format="PNG")
                checksums[PREVIEW_FILE] = sha256_file(tmp / PREVIEW_FILE)
        full["checksums"] = checksums
        (tmp / MANIFEST_FILE).write_text(_to_json(full), encoding="utf-8")
    log.info("saved artifact %s (%d tensors, %d bytes)", out_dir, len(prepared), total_bytes)
    return out_dir


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


@dataclass
class Artifact:
    """A loaded artifact: its directory, manifest, stored components (``tensors``) and what its
    decoder made of them (``decoded``), all on CPU. ``images``/``labels``/``targets`` are decoded."""

    path: Path
    manifest: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(repr=False)
    decoded: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    soft_labels: torch.Tensor | None = field(repr=False, default=None)  # stored teacher logits [N, K]

    @property
    def decoder(self) -> dict[str, Any]:
        return decoder_of(self.manifest)

    @property
    def images(self) -> torch.Tensor:
        """Decoded training data: images [N, C, H, W] in [0, 1], or vectors [N, D]."""
        for key in ("images", "vectors"):
            if key in self.decoded:
                return self.decoded[key]
        raise TinysetError(f"artifact {self.path} decodes to no images or vectors (has: {', '.join(self.decoded)})")

    @property
    def labels(self) -> torch.Tensor | None:
        return self.decoded.get("labels")

    @property
    def targets(self) -> torch.Tensor | None:
        return self.decoded.get("targets")

    @property
    def total_bytes(self) -> int:
        return int(self.manifest.get("total_bytes", 0))

    @property
    def set_bytes(self) -> int:
        """Bytes of the set file on disk (components, header, decoder): what every label mode needs.
        Artifacts written before the count was recorded report their file's size."""
        if "set_bytes" in self.manifest:
            return int(self.manifest["set_bytes"])
        return (self.path / TENSORS_FILE).stat().st_size

    @property
    def label_mode(self) -> str:
        return self.manifest.get("label_mode") or ("stored" if self.soft_labels is not None else "hard")

    def label_bytes(self, mode: str | None = None) -> int:
        """What label mode ``mode`` (default: the artifact's) adds to ``set_bytes``."""
        mode = mode or self.label_mode
        known = dict(self.manifest.get("label_bytes") or {"hard": 0})
        if mode not in known:
            have = ", ".join(sorted(known))
            raise TinysetError(f"{self.path}: no byte count for label mode {mode!r} (this artifact knows: {have})")
        return int(known[mode])

    def student_bytes(self, mode: str | None = None) -> int:
        """``set_bytes`` + what the label mode needs: nothing (hard), the stored soft labels' file
        (stored) or the teacher's parameters at their stored precision (teacher)."""
        return self.set_bytes + self.label_bytes(mode)

    @property
    def class_names(self) -> list[str] | None:
        names = self.manifest.get("class_names")
        if names is None:
            names = (self.manifest.get("dataset_info") or {}).get("class_names")
        return list(names) if names is not None else None

    @property
    def ipc(self) -> int | None:
        return self.manifest.get("ipc")

    def as_dataset(self) -> torch.utils.data.TensorDataset:
        """The distilled set as a torch ``Dataset`` of (image, label) pairs, for any DataLoader."""
        if self.labels is None:
            return torch.utils.data.TensorDataset(self.images)
        return torch.utils.data.TensorDataset(self.images, self.labels)


def decoder_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's decoder; format-1 artifacts are plain pixels."""
    dec = manifest.get("decoder") if manifest.get("format_version", 1) >= 2 else None
    if dec is None:
        return {"name": "pixels", "config": {}}
    if not isinstance(dec, dict) or not isinstance(dec.get("name"), str):
        raise TinysetError(f"manifest decoder must be {{'name': ..., 'config': {{...}}}}, got {dec!r}")
    return {"name": dec["name"], "config": dict(dec.get("config") or {})}


def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST_FILE
    if not mpath.is_file():
        raise TinysetError(f"{mpath} is missing: not a tinyset artifact (or an incomplete one)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TinysetError(f"{mpath} is not valid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise TinysetError(f"{mpath} is not valid JSON ({e.msg} at line {e.lineno}); the file is truncated or corrupted") from None
    if not isinstance(manifest, dict):
        raise TinysetError(f"{mpath} must hold a JSON object, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if version is None:
        raise TinysetError(f"{mpath} has no format_version: not a tinyset artifact")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TinysetError(f"{mpath} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise TinysetError(
            f"{mpath} has format_version {version}, written by a newer tinyset "
            f"(this one reads up to {FORMAT_VERSION}); upgrade tinyset to load it"
        )
    return manifest


def _check_components(tpath: Path, manifest: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    components = manifest.get("components")
    if not isinstance(components, dict):
        raise TinysetError(f"{tpath.parent / MANIFEST_FILE} has no components table")
    if set(components) != set(tensors):
        raise TinysetError(
            f"{tpath} holds tensors [{', '.join(sorted(tensors))}] but the manifest lists "
            f"[{', '.join(sorted(components))}]"
        )
    for name, t in tensors.items():
        c = components[name] if isinstance(components[name], dict) else {}
        if c.get("shape") != list(t.shape) or c.get("dtype") != _dtype_name(t.dtype):
            raise TinysetError(
                f"{tpath} tensor {name!r} is {_dtype_name(t.dtype)}{list(t.shape)} but the manifest "
                f"says {c.get('dtype')}{c.get('shape')}"
            )


def load_artifact(path: str | os.PathLike, verify: bool = True) -> Artifact:
    """Load and check an artifact directory. ``verify`` hashes the tensors file against the
    manifest's sha256 (skip it only for trusted, very large artifacts)."""
    path = Path(path)
    if not path.is_dir():
        raise TinysetError(f"artifact directory {path} does not exist" if not path.exists() else f"artifact path {path} is not a directory")
    manifest = _read_manifest(path)
    tpath = path / TENSORS_FILE
    if not tpath.is_file():
        raise TinysetError(f"{tpath} is missing")
    if verify:
        expected = (manifest.get("checksums") or {}).get(TENSORS_FILE)
        if not expected:
            raise TinysetError(f"{path / MANIFEST_FILE} has no sha256 for {TENSORS_FILE}; load with verify=False to skip the check")
        if sha256_file(tpath) != expected:
            raise TinysetError(f"{tpath}: {TENSORS_FILE} checksum mismatch: file changed or corrupted")
        ppath = path / PREVIEW_FILE
        pexpected = (manifest.get("checksums") or {}).get(PREVIEW_FILE)
        if pexpected and ppath.is_file() and sha256_file(ppath) != pexpected:
            log.warning("%s does not match its checksum (cosmetic only; tensors are intact)", ppath)
    try:
        tensors = safetensors.torch.load_file(str(tpath), device="cpu")
    except Exception as e:  # safetensors raises its own error types; any failure means unreadable
        raise TinysetError(f"{tpath} is unreadable: {e}") from None
    _check_components(tpath, manifest, tensors)
    from .decoders import get_decoder

    dec = decoder_of(manifest)
    try:
        decoded = get_decoder(dec["name"]).decode(tensors, dec["config"])
    except TinysetError as e:
        raise TinysetError(f"{path}: {e}") from None
    except Exception as e:
        raise TinysetError(f"{path}: decoder {dec['name']!r} failed: {type(e).__name__}: {e}") from None
    return Artifact(path=path, manifest=manifest, tensors=tensors, decoded=decoded,
                    soft_labels=_load_soft_labels(path, manifest, verify))


def _load_soft_labels(path: Path, manifest: dict[str, Any], verify: bool) -> torch.Tensor | None:
    """The stored soft labels (logits [N, K]) when the artifact has them, else None."""
    spath = path / SOFT_FILE
    cfg = manifest.get("soft_labels")
    if cfg is None:
        return None
    if not spath.is_file():
        raise TinysetError(f"{spath} is missing (the manifest records stored soft labels)")
    if verify and sha256_file(spath) != (manifest.get("checksums") or {}).get(SOFT_FILE):
        raise TinysetError(f"{spath}: {SOFT_FILE} checksum mismatch: file changed or corrupted")
    from ..quant.soft_labels import decode_soft_labels

    try:
        return decode_soft_labels(safetensors.torch.load_file(str(spath), device="cpu"), cfg)
    except Exception as e:
        raise TinysetError(f"{spath} is unreadable: {type(e).__name__}: {e}") from None


def read_set_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Decode a set file (``tensors.safetensors``) on its own, from the decoder its header carries:
    what a student needs is that one file (``set_bytes``), not the manifest beside it."""
    from safetensors import safe_open

    from .decoders import get_decoder

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "decoder" not in meta:
        raise TinysetError(f"{path} carries no decoder in its header (written before tinyset recorded it there)")
    dec = json.loads(meta["decoder"])
    return get_decoder(dec["name"]).decode(tensors, dec.get("config") or {})
