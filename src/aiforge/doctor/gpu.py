"""torch / GPU checks: the torch build vs the driver, CUDA, MPS, a real matmul on each device."""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from typing import Any

from aiforge.doctor.installs import pip_command
from aiforge.doctor.model import Env, Finding, gib

MATMUL_N = 512  # big enough to hit real BLAS/cuBLAS kernels, small enough to be instant
DTYPE_N = 256
# PyTorch wheel indexes by CUDA version (https://download.pytorch.org/whl/cuXYZ).
TORCH_CUDA_WHEELS: tuple[tuple[int, int], ...] = (
    (11, 8),
    (12, 1),
    (12, 4),
    (12, 6),
    (12, 8),
    (12, 9),
    (13, 0),
)
ML_PACKAGES = ("transformers", "timm", "sentence-transformers")


def _version_tuple(text: str | None) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def nvidia_smi(env: Env) -> dict[str, Any] | None:
    """Driver facts from nvidia-smi, or None when there is no NVIDIA driver tool at all."""
    commands = [["nvidia-smi"]]
    if env.windows:  # older Windows drivers did not put nvidia-smi on PATH
        commands.append([r"C:\Program Files\NVIDIA Corporation\NVSMI\nvidia-smi.exe"])
    for cmd in commands:
        rc, out = env.run(cmd)
        if rc in (126, 127):
            continue
        info: dict[str, Any] = {"ok": rc == 0, "output": out.strip()[-2000:], "command": cmd[0]}
        if m := re.search(r"Driver Version:\s*([\d.]+)", out):
            info["driver"] = m.group(1)
        if m := re.search(r"CUDA Version:\s*([\d.]+)", out):
            info["cuda"] = m.group(1)
        if rc == 0:
            q_rc, q_out = env.run([cmd[0], "--query-gpu=index,name,memory.total", "--format=csv,noheader"])
            if q_rc == 0:
                info["gpus"] = [line.strip() for line in q_out.splitlines() if line.strip()]
        return info
    return None


def _wheel_for(max_cuda: tuple[int, int] | None) -> str | None:
    fitting = [w for w in TORCH_CUDA_WHEELS if max_cuda and w <= max_cuda]
    return f"cu{fitting[-1][0]}{fitting[-1][1]}" if fitting else None


def _torch_build(torch: Any) -> str:
    version: Any = getattr(torch, "version", None)
    if getattr(version, "cuda", None):
        return f"CUDA {version.cuda}"
    if getattr(version, "hip", None):
        return f"ROCm {version.hip}"
    return "CPU"


def check_torch_import(env: Env) -> tuple[Finding, Any]:
    try:
        torch = env.import_module("torch")
    except ImportError as exc:
        return Finding(
            "torch",
            "warn",
            f"torch is not installed ({exc})",
            fix=f'{pip_command(env)} install "aiforge[ml]"',
            code="AF-TORCH-001",
        ), None
    except Exception as exc:  # DLL load failures, undefined symbols, ABI mismatches
        return Finding(
            "torch",
            "fail",
            f"`import torch` failed: {type(exc).__name__}: {exc}",
            fix=f"Reinstall it cleanly: `{pip_command(env)} install --force-reinstall --no-cache-dir torch`",
            code="AF-TORCH-002",
        ), None
    build = _torch_build(torch)
    details = {
        "version": getattr(torch, "__version__", "?"),
        "build": build,
        "path": str(getattr(torch, "__file__", "")),
    }
    return Finding("torch", "ok", f"torch {details['version']} ({build} build)", details=details), torch


def _cuda_available(torch: Any) -> tuple[bool, str]:
    # torch reports driver problems as warnings from is_available(): keep them as facts.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ok = bool(torch.cuda.is_available())
        except Exception as exc:
            return False, str(exc)
    return ok, "; ".join(str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip())


def check_cuda(env: Env, torch: Any, smi: dict[str, Any] | None) -> Finding:
    torch_cuda = getattr(torch.version, "cuda", None)
    available, note = _cuda_available(torch)
    driver_cuda = _version_tuple((smi or {}).get("cuda"))
    wheel = _wheel_for(driver_cuda)
    index = f"https://download.pytorch.org/whl/{wheel}" if wheel else None
    details = {
        "torch_cuda": torch_cuda,
        "hip": getattr(torch.version, "hip", None),
        "available": available,
        "nvidia_smi": {k: v for k, v in (smi or {}).items() if k != "output"} or None,
        "note": note,
    }
    driver = f"NVIDIA driver {smi.get('driver', '?')} (CUDA <= {smi.get('cuda', '?')})" if smi else ""
    reinstall = (
        f"`{pip_command(env)} install --force-reinstall torch torchvision --index-url {index}`"
        if index
        else "update the NVIDIA driver (https://www.nvidia.com/Download/index.aspx)"
    )

    if smi and not smi["ok"]:
        first = next((ln for ln in smi["output"].splitlines() if ln.strip()), "no output")
        return Finding(
            "cuda",
            "fail" if torch_cuda else "warn",
            f"nvidia-smi failed: {first}",
            fix="The NVIDIA driver is not loaded: reboot after a driver/kernel update, or reinstall the "
            "driver (Linux: `sudo ubuntu-drivers install` / your distro's nvidia package).",
            code="AF-CUDA-002",
            details=details,
        )
    if smi and not torch_cuda:
        return Finding(
            "cuda",
            "fail",
            f"{driver} found, but torch is a {_torch_build(torch)} build: the GPU is unused",
            fix=f"Install a CUDA build of torch: {reinstall}",
            code="AF-CUDA-001",
            details=details,
        )
    if not torch_cuda:
        hip = getattr(torch.version, "hip", None)
        if hip and available:
            return Finding(
                "cuda", "ok", f"ROCm {hip}: {torch.cuda.device_count()} GPU(s) visible", details=details
            )
        if env.platform == "darwin":
            return Finding("cuda", "ok", "no CUDA on macOS (see mps)", details=details)
        return Finding(
            "cuda",
            "ok",
            f"no NVIDIA driver (nvidia-smi not found); torch is a {_torch_build(torch)} build",
            details=details,
        )

    built = _version_tuple(torch_cuda)
    if not smi:
        return Finding(
            "cuda",
            "warn",
            f"torch is a CUDA {torch_cuda} build, but there is no NVIDIA driver "
            "(nvidia-smi not found): running on CPU",
            fix="On a GPU machine install the NVIDIA driver. On a CPU-only machine the CPU wheel is "
            f"~4 GB smaller: `{pip_command(env)} install --force-reinstall torch torchvision "
            "--index-url https://download.pytorch.org/whl/cpu`",
            code="AF-CUDA-002",
            details=details,
        )
    if built and driver_cuda and built > driver_cuda:
        major = built[0] != driver_cuda[0]
        return Finding(
            "cuda",
            "fail" if major or not available else "warn",
            f"torch is built for CUDA {torch_cuda} but the {driver}"
            + ("" if available else f"; torch.cuda.is_available() is False{': ' + note if note else ''}"),
            fix=f"Update the NVIDIA driver to one supporting CUDA {torch_cuda} "
            "(https://www.nvidia.com/Download/index.aspx)"
            + (f", or install a wheel built for the driver: {reinstall}" if index else "."),
            code="AF-CUDA-003",
            details=details,
        )
    if not available:
        hidden = "CUDA_VISIBLE_DEVICES" in env.environ
        visible = env.getenv("CUDA_VISIBLE_DEVICES")
        hint = f" CUDA_VISIBLE_DEVICES={visible!r} hides GPUs: unset it." if hidden else ""
        return Finding(
            "cuda",
            "fail",
            f"{driver} and a CUDA {torch_cuda} build, but torch.cuda.is_available() is "
            f"False{': ' + note if note else ''}",
            fix=f"Check `nvidia-smi` and the container's GPU access (docker run --gpus all).{hint} "
            f"If it persists: {reinstall}",
            code="AF-CUDA-002",
            details=details,
        )
    count = torch.cuda.device_count()
    return Finding(
        "cuda", "ok", f"{driver}; torch CUDA {torch_cuda}; {count} GPU(s) available", details=details
    )


def check_mps(env: Env, torch: Any) -> Finding | None:
    if env.platform != "darwin":
        return None
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    available = bool(mps and mps.is_available())
    built = bool(mps and mps.is_built())
    details = {"available": available, "built": built, "machine": env.machine}
    if available:
        return Finding("mps", "ok", "Apple MPS available", details=details)
    if env.machine == "x86_64":
        rc, out = env.run(["sysctl", "-n", "sysctl.proc_translated"])
        if rc == 0 and out.strip() == "1":  # an Intel Python under Rosetta on an Apple-silicon Mac
            return Finding(
                "mps",
                "warn",
                "Python is an x86_64 build running under Rosetta on Apple silicon: no MPS, slow CPU",
                fix="Install a native arm64 Python (Miniforge arm64 or "
                "python.org universal2) and recreate the environment.",
                code="AF-MPS-001",
                details={**details, "rosetta": True},
            )
        return Finding("mps", "ok", "Intel Mac: no MPS (CPU only)", details=details)
    if env.machine == "arm64":
        why = "torch was built without MPS" if not built else "MPS not available (macOS < 12.3?)"
        return Finding(
            "mps",
            "warn",
            f"Apple silicon but {why}",
            fix=f"Update macOS to >= 12.3 and install the standard macOS arm64 torch wheel: "
            f"`{pip_command(env)} install --upgrade torch`",
            code="AF-MPS-001",
            details=details,
        )
    return Finding("mps", "ok", "MPS not available", details=details)


def available_devices(torch: Any) -> list[str]:
    devices = ["cpu"]
    if _cuda_available(torch)[0]:
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def _sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def _rel_err(torch: Any, got: Any, ref: Any) -> float:
    got = got.detach().to("cpu", torch.float64)
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _timed_matmul(torch: Any, device: str, a: Any, b: Any, reps: int = 5) -> tuple[Any, float]:
    """Median wall time in ms of a @ b on device (after one warm-up that pays for kernel loading)."""
    a, b = a.to(device), b.to(device)
    out = a @ b
    _sync(torch, device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = a @ b
        _sync(torch, device)
        times.append((time.perf_counter() - start) * 1000)
    return out, sorted(times)[len(times) // 2]


def _dtype_support(torch: Any, device: str, a: Any, b: Any) -> dict[str, bool]:
    """Does a small fp16/bf16 matmul run on device and stay close to the fp64 result?"""
    a, b = a[:DTYPE_N, :DTYPE_N], b[:DTYPE_N, :DTYPE_N]
    ref = a.double() @ b.double()
    support: dict[str, bool] = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        if device.startswith("cuda") and name == "bf16" and not torch.cuda.is_bf16_supported():
            support[name] = False
            continue
        try:
            got = a.to(device, dtype) @ b.to(device, dtype)
            _sync(torch, device)
            support[name] = _rel_err(torch, got, ref) < 5e-2
        except Exception:  # "not implemented for 'Half'" and friends
            support[name] = False
    return support


def _device_label(torch: Any, device: str) -> tuple[str, dict[str, Any]]:
    if not device.startswith("cuda"):
        return device, {}
    idx = int(device.split(":")[1])
    props = torch.cuda.get_device_properties(idx)
    cap = torch.cuda.get_device_capability(idx)
    info: dict[str, Any] = {
        "name": props.name,
        "capability": f"sm_{cap[0]}{cap[1]}",
        "total_bytes": int(props.total_memory),
    }
    with contextlib.suppress(Exception):
        info["free_bytes"] = int(torch.cuda.mem_get_info(idx)[0])
    mem = f"{gib(info['free_bytes'])} free / " if "free_bytes" in info else ""
    return f"{device} {props.name} ({info['capability']}, {mem}{gib(info['total_bytes'])})", info


def check_device(env: Env, torch: Any, device: str, a: Any, b: Any, ref: Any) -> Finding:
    """A real matmul on one device, timed and checked against the fp64 CPU result."""
    check = f"device:{device}"
    code = {"cpu": "AF-TORCH-003", "mps": "AF-MPS-002"}.get(device, "AF-CUDA-004")
    try:
        label, details = _device_label(torch, device)
        out, ms = _timed_matmul(torch, device, a, b)
        err = _rel_err(torch, out, ref)
    except Exception as exc:
        arch = ""
        if device.startswith("cuda"):
            with contextlib.suppress(Exception):
                major, minor = torch.cuda.get_device_capability(int(device.split(":")[1]))
                if f"sm_{major}{minor}" not in torch.cuda.get_arch_list():
                    arch = f" This torch has no kernels for sm_{major}{minor} ({torch.cuda.get_arch_list()})."
        return Finding(
            check,
            "fail",
            f"{MATMUL_N}x{MATMUL_N} matmul on {device} failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}",
            fix=f"Install a torch build that supports this device.{arch} See "
            "https://pytorch.org/get-started/locally/ ; on CUDA rerun with CUDA_LAUNCH_BLOCKING=1 "
            "for the exact failing kernel.",
            code=code,
        )
    gflops = 2 * MATMUL_N**3 / (ms / 1000) / 1e9 if ms > 0 else float("inf")
    dtypes = _dtype_support(torch, device, a, b)
    details.update(
        {
            "device": device,
            "matmul_ms": round(ms, 3),
            "gflops": round(gflops, 1),
            "max_rel_err": err,
            **dtypes,
        }
    )
    kinds = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in dtypes.items())
    message = (
        f"{label}: {MATMUL_N}x{MATMUL_N} fp32 matmul {ms:.2f} ms ({gflops:.0f} GFLOP/s), "
        f"max rel err vs CPU fp64 {err:.1e}; {kinds}"
    )
    # fp32 on GPUs may use TF32 (10-bit mantissa) when a program enabled it: allow ~1e-2.
    if err > (1e-4 if device == "cpu" else 1e-2):
        return Finding(
            check,
            "fail",
            message + " (WRONG RESULT)",
            fix="The device computes wrong numbers: update the driver / torch, and check the "
            "hardware (overclock, ECC errors in `nvidia-smi -q`).",
            code=code,
            details=details,
        )
    return Finding(check, "ok", message, details=details)


def check_torch(env: Env, *, device_ops: bool = True) -> list[Finding]:
    finding, torch = check_torch_import(env)
    findings = [finding]
    if torch is None:
        # Without torch a visible NVIDIA driver is still worth reporting.
        smi = nvidia_smi(env)
        if smi and smi["ok"]:
            wheel = _wheel_for(_version_tuple(smi.get("cuda")))
            finding.details["nvidia_smi"] = {k: v for k, v in smi.items() if k != "output"}
            if wheel:
                finding.fix += (
                    f" (this machine has NVIDIA driver {smi.get('driver')}: use "
                    f"`--index-url https://download.pytorch.org/whl/{wheel}` for torch)"
                )
        return findings
    findings.append(check_cuda(env, torch, nvidia_smi(env) if env.platform != "darwin" else None))
    mps = check_mps(env, torch)
    if mps is not None:
        findings.append(mps)
    if device_ops:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(MATMUL_N, MATMUL_N, generator=gen)
        b = torch.randn(MATMUL_N, MATMUL_N, generator=gen)
        ref = a.double() @ b.double()
        for device in available_devices(torch):
            findings.append(check_device(env, torch, device, a, b, ref))
    return findings


def check_packages(env: Env) -> list[Finding]:
    findings = []
    for name in ML_PACKAGES:
        version = env.dist_version(name)
        if version:
            findings.append(Finding(f"pkg:{name}", "ok", f"{name} {version}", details={"version": version}))
        else:
            findings.append(
                Finding(
                    f"pkg:{name}",
                    "warn",
                    f"{name} is not installed",
                    fix=f'{pip_command(env)} install "aiforge[ml]"',
                    code="AF-PKG-001",
                )
            )
    return findings
