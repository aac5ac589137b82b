"""``aiforge doctor``: check that this machine can actually do applied-ML work.

Every check reads its facts from an :class:`Env` instead of ``sys``/``os`` directly, so
the tests can fabricate Linux, macOS and Windows machines (fake PATH directories, conda
installs, ``.condarc`` files, ``nvidia-smi`` output, a fake ``torch``) on any host.

Each check returns :class:`Finding` objects: ``ok`` / ``warn`` / ``fail``, the facts that
were found, and for problems a fix spelled out as commands plus a stable ``AF-...`` code
from :data:`aiforge.errors.CODES`. torch and friends are imported lazily inside the checks
so ``import aiforge.doctor`` stays cheap.

One module per concern: :mod:`.model` (Env, Finding), :mod:`.installs` (where an interpreter
comes from), :mod:`.python`, :mod:`.conda`, :mod:`.editor`, :mod:`.gpu` (torch, CUDA, MPS),
:mod:`.resources` (HF cache, disk, memory), :mod:`.plots` (a font for Korean plot labels) and
:mod:`.runner` (runs them all, reports).
"""

from aiforge.doctor.conda import check_conda_channels, condarc_paths, installed_channels
from aiforge.doctor.editor import check_editor, strip_jsonc
from aiforge.doctor.gpu import (
    MATMUL_N,
    available_devices,
    check_cuda,
    check_device,
    check_mps,
    check_packages,
    check_torch,
    check_torch_import,
    nvidia_smi,
)
from aiforge.doctor.model import Env, Finding, Status
from aiforge.doctor.plots import check_plot_fonts
from aiforge.doctor.python import (
    check_pip,
    check_python,
    check_python_env,
    check_python_path,
    python_origin,
    pythons_on_path,
)
from aiforge.doctor.resources import (
    check_disk,
    check_hf_cache,
    check_memory,
    dir_size,
    hf_cache_dir,
    memory_info,
)
from aiforge.doctor.runner import exit_code, render, run_checks, summary, to_json

__all__ = [
    "Env",
    "Finding",
    "Status",
    "MATMUL_N",
    "available_devices",
    "check_conda_channels",
    "check_cuda",
    "check_device",
    "check_disk",
    "check_editor",
    "check_hf_cache",
    "check_memory",
    "check_mps",
    "check_packages",
    "check_pip",
    "check_plot_fonts",
    "check_python",
    "check_python_env",
    "check_python_path",
    "check_torch",
    "check_torch_import",
    "condarc_paths",
    "dir_size",
    "exit_code",
    "hf_cache_dir",
    "installed_channels",
    "memory_info",
    "nvidia_smi",
    "python_origin",
    "pythons_on_path",
    "render",
    "run_checks",
    "strip_jsonc",
    "summary",
    "to_json",
]
