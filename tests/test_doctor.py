"""Tests for ``aiforge doctor``.

Almost everything runs against fabricated machines: a tmp_path with fake PATH folders,
fake interpreters, conda installs, .condarc files, VS Code settings, a fake ``torch`` and a
fake ``nvidia-smi`` through the injected runner. One test runs the real checks here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aiforge import doctor
from aiforge.doctor import Env, Finding, gpu, installs, runner

GiB = 2**30

SMI_OK = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: {cuda}     |
|   0  NVIDIA GeForce RTX 4090        Off |   00000000:01:00.0  On |                  Off |
"""


# --------------------------------------------------------------------------- fabrication helpers


def make_exe(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path


def make_venv(root: Path, *, windows: bool = False) -> Path:
    """A venv folder with pyvenv.cfg; returns its interpreter."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.9\n")
    if windows:
        return make_exe(root / "Scripts" / "python.exe")
    exe = make_exe(root / "bin" / "python")
    if not (root / "bin" / "python3").exists():
        (root / "bin" / "python3").symlink_to("python")  # like real venvs
    return exe


def make_conda(root: Path, packages: dict[str, str] | None = None) -> Path:
    """A conda prefix with conda-meta records {name: channel}; returns its interpreter."""
    meta = root / "conda-meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "history").write_text("==> 2024-01-01 <==\n")
    for name, channel in (packages or {}).items():
        (meta / f"{name}-1.0-0.json").write_text(json.dumps({"name": name, "channel": channel}))
    return make_exe(root / "bin" / "python")


def fake_runner(answers: dict[str, tuple[int, str]]) -> Callable[[Sequence[str]], tuple[int, str]]:
    """Answer commands by a key: the joined argv, else its first word's file name; else 'not found'."""
    calls: list[list[str]] = []

    def run(cmd: Sequence[str]) -> tuple[int, str]:
        calls.append(list(cmd))
        joined = " ".join(cmd)
        for key in (joined, Path(cmd[0]).name):
            if key in answers:
                return answers[key]
        return 127, f"{cmd[0]}: not found"

    run.calls = calls  # type: ignore[attr-defined]
    return run


def fake_import(modules: dict[str, Any]) -> Callable[[str], Any]:
    def import_module(name: str) -> Any:
        if name not in modules:
            raise ImportError(f"No module named {name!r}")
        module = modules[name]
        if isinstance(module, BaseException):
            raise module
        return module

    return import_module


def fake_torch(
    *,
    cuda: str | None = None,
    hip: str | None = None,
    available: bool = False,
    count: int = 0,
    mps: bool = False,
    mps_built: bool = True,
) -> SimpleNamespace:
    build = f"+cu{cuda.replace('.', '')}" if cuda else "+cpu"
    return SimpleNamespace(
        __version__=f"2.5.1{build}",
        __file__="/fake/torch/__init__.py",
        version=SimpleNamespace(cuda=cuda, hip=hip),
        cuda=SimpleNamespace(is_available=lambda: available, device_count=lambda: count),
        backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps, is_built=lambda: mps_built)),
    )


def make_env(tmp_path: Path, **overrides: Any) -> Env:
    """A Linux machine running a venv, with nothing else installed; override any field."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    venv = tmp_path / "proj" / ".venv"
    exe = make_venv(venv)
    (tmp_path / "proj").mkdir(exist_ok=True)
    fields: dict[str, Any] = dict(
        platform="linux",
        machine="x86_64",
        executable=str(exe),
        prefix=str(venv),
        base_prefix="/usr",
        version=(3, 11, 9),
        environ={"PATH": str(exe.parent)},
        cwd=tmp_path / "proj",
        home=home,
        run=fake_runner({}),
        import_module=fake_import({}),
        dist_version=lambda name: "1.0",
        disk_usage=lambda path: (500 * GiB, 1000 * GiB),
        meminfo_path=tmp_path / "no-meminfo",
    )
    fields.update(overrides)
    return Env(**fields)


def by_check(findings: list[Finding], check: str) -> Finding:
    matches = [f for f in findings if f.check == check]
    assert matches, f"no finding {check!r} in {[f.check for f in findings]}"
    return matches[0]


# --------------------------------------------------------------------------- module basics


def test_import_does_not_pull_in_torch_or_transformers() -> None:
    code = (
        "import sys, aiforge.doctor; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_finding_rejects_unregistered_code_and_serialises_paths() -> None:
    with pytest.raises(ValueError):
        Finding("x", "warn", "m", code="AF-NOPE-999")
    data = Finding("x", "ok", "m", details={"p": Path("/a"), "t": (1, 2)}).to_dict()
    assert data["details"] == {"p": "/a", "t": [1, 2]}
    json.dumps(data)


def test_exit_code_to_json_and_render() -> None:
    from rich.console import Console

    findings = [
        Finding("python", "ok", "Python 3.11.9"),
        Finding(
            "conda-channels",
            "warn",
            "channel 'defaults'",
            fix="conda config --remove channels defaults",
            code="AF-CONDA-001",
        ),
        Finding("cuda", "fail", "CPU build", fix="pip install torch", code="AF-CUDA-001"),
    ]
    assert doctor.exit_code(findings) == 1
    assert doctor.exit_code(findings[:2]) == 0
    data = doctor.to_json(findings)
    assert data["ok"] is False
    assert data["summary"] == {"ok": 1, "warn": 1, "fail": 1}
    assert [f["code"] for f in data["findings"]] == [None, "AF-CONDA-001", "AF-CUDA-001"]
    console = Console(record=True, width=120, color_system=None)
    doctor.render(findings, console)
    text = console.export_text()
    assert "fix: conda config --remove channels defaults" in text
    assert "[AF-CUDA-001]" in text and "✗" in text and "1 ok, 1 warn, 1 fail" in text


# --------------------------------------------------------------------------- Python origin


def test_venv_on_pyenv_python_is_ok(tmp_path: Path) -> None:
    base = tmp_path / "home" / ".pyenv" / "versions" / "3.11.9"
    env = make_env(tmp_path, base_prefix=str(base))
    finding = doctor.check_python(env)
    assert finding.status == "ok"
    assert "venv" in finding.message and "pyenv" in finding.message and "3.11.9" in finding.message
    assert doctor.check_python_env(env).status == "ok"


@pytest.mark.parametrize(
    ("dirname", "files", "expected"),
    [
        ("miniforge3", {}, "miniforge"),
        ("mambaforge", {}, "miniforge"),
        ("miniconda3", {}, "miniconda"),
        ("anaconda3", {}, "anaconda"),
        # neutral folder names: the installers' own files decide
        ("conda", {"conda-meta/anaconda-2024.02-py311_0.json": "{}"}, "anaconda"),
        (
            "conda",
            {"conda-meta/anaconda-client-1.12-0.json": "{}", "conda-meta/history": "# Miniconda3\n"},
            "miniconda",
        ),
        ("conda", {".condarc": "channels:\n  - conda-forge\n"}, "miniforge"),
        (
            "conda",
            {
                "conda-meta/conda-24.1.0-py311.json": json.dumps(
                    {"name": "conda", "channel": "https://repo.anaconda.com/pkgs/main/linux-64"}
                )
            },
            "miniconda",
        ),
    ],
)
def test_conda_distribution_flavour(
    tmp_path: Path, dirname: str, files: dict[str, str], expected: str
) -> None:
    root = tmp_path / dirname
    make_conda(root)
    (root / "conda-meta" / "history").write_text("")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    env = make_env(tmp_path, executable=str(root / "bin" / "python"), prefix=str(root), base_prefix=str(root))
    assert doctor.python_origin(env)["install"] == expected


def test_conda_env_under_miniforge(tmp_path: Path) -> None:
    root = tmp_path / "miniforge3"
    make_conda(root)
    exe = make_conda(root / "envs" / "ml")
    env = make_env(
        tmp_path, executable=str(exe), prefix=str(root / "envs" / "ml"), base_prefix=str(root / "envs" / "ml")
    )
    finding = doctor.check_python(env)
    assert finding.status == "ok"
    assert "conda env" in finding.message and "miniforge" in finding.message
    assert doctor.check_python_env(env).status == "ok"


def test_conda_base_env_warns(tmp_path: Path) -> None:
    root = tmp_path / "miniconda3"
    exe = make_conda(root)
    env = make_env(tmp_path, executable=str(exe), prefix=str(root), base_prefix=str(root))
    finding = doctor.check_python_env(env)
    assert (finding.status, finding.code) == ("warn", "AF-PY-005")
    assert "conda create -n aiforge" in finding.fix


def test_system_python_outside_venv_warns(tmp_path: Path) -> None:
    env = make_env(tmp_path, executable="/usr/bin/python3", prefix="/usr", base_prefix="/usr")
    assert doctor.python_origin(env)["install"] == "system"
    finding = doctor.check_python_env(env)
    assert (finding.status, finding.code) == ("warn", "AF-PY-005")
    assert "python -m venv .venv" in finding.fix and "source .venv/bin/activate" in finding.fix


def test_windows_store_python_fails(tmp_path: Path) -> None:
    apps = tmp_path / "Users" / "me" / "AppData" / "Local" / "Microsoft" / "WindowsApps"
    exe = make_exe(apps / "python.exe")
    win = str(exe).replace("/", "\\")
    env = make_env(
        tmp_path, platform="win32", machine="AMD64", executable=win, prefix=str(apps), base_prefix=str(apps)
    )
    finding = doctor.check_python(env)
    assert (finding.status, finding.code) == ("fail", "AF-PY-001")
    assert "App execution aliases" in finding.fix and "python.org" in finding.fix
    assert doctor.exit_code([finding]) == 1


def test_old_python_fails(tmp_path: Path) -> None:
    finding = doctor.check_python(make_env(tmp_path, version=(3, 8, 18)))
    assert (finding.status, finding.code) == ("fail", "AF-PY-002")
    assert ">= 3.10" in finding.message


# --------------------------------------------------------------------------- PATH and pip


def test_other_python_first_on_path_warns(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    other = make_exe(tmp_path / "usr" / "bin" / "python3")
    make_exe(tmp_path / "usr" / "bin" / "python3-config")  # not an interpreter
    env.environ["PATH"] = f"{other.parent}:{Path(env.executable).parent}"
    finding = doctor.check_python_path(env)
    assert (finding.status, finding.code) == ("warn", "AF-PY-003")
    assert f"`python3` on PATH is {other}" in finding.message
    assert finding.details["pythons"] == [str(other), env.executable]
    assert "activate" in finding.fix and "python -m pip" in finding.fix

    env.environ["PATH"] = f"{Path(env.executable).parent}:{other.parent}"
    ok = doctor.check_python_path(env)
    assert ok.status == "ok" and "2 interpreter(s)" in ok.message


def test_venv_symlinks_count_as_the_venv_not_the_base(tmp_path: Path) -> None:
    base = make_exe(tmp_path / "base" / "bin" / "python3.11")
    (base.parent / "python3").symlink_to("python3.11")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {base.parent}\n")
    (venv / "bin" / "python").symlink_to(base)
    (venv / "bin" / "python3").symlink_to("python")
    env = make_env(
        tmp_path,
        executable=str(venv / "bin" / "python"),
        prefix=str(venv),
        base_prefix=str(base.parent.parent),
        environ={"PATH": f"{base.parent}"},
    )
    finding = doctor.check_python_path(env)
    assert finding.status == "warn"  # the base python3.11 is another interpreter than the venv
    env.environ["PATH"] = f"{venv / 'bin'}:{base.parent}"
    assert doctor.check_python_path(env).status == "ok"


def test_pyenv_shims_are_resolved_by_asking_them(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    shims = tmp_path / "home" / ".pyenv" / "shims"
    make_exe(shims / "python", "#!/usr/bin/env bash\nexec pyenv exec python\n")
    make_exe(shims / "python3.9", "#!/usr/bin/env bash\nexec pyenv exec python3.9\n")
    env.environ["PATH"] = f"{shims}"
    env.run = fake_runner(
        {
            f"{shims / 'python'} -c import sys; print(sys.executable)": (0, env.executable + "\n"),
            f"{shims / 'python3.9'} -c import sys; print(sys.executable)": (
                127,
                "pyenv: python3.9: command not found",
            ),
        }
    )
    finding = doctor.check_python_path(env)
    assert finding.status == "ok", finding.message
    assert finding.details["pythons"] == [str(shims / "python")]  # the unselected 3.9 shim runs nothing


def test_pyenv_shims_are_resolved_from_version_files_without_running(tmp_path: Path) -> None:
    root = tmp_path / "home" / ".pyenv"
    make_exe(root / "shims" / "python", "#!/usr/bin/env bash\nexec pyenv exec python\n")
    old = make_exe(root / "versions" / "3.10.13" / "bin" / "python")
    new = make_exe(root / "versions" / "3.12.1" / "bin" / "python")
    (root / "version").write_text("3.10.13\n")
    env = make_env(tmp_path, environ={"PATH": str(root / "shims")})
    assert installs.shim_target(env, root / "shims" / "python") == str(old)
    (tmp_path / "proj" / ".python-version").write_text("3.12  # project pin, prefix form\n")
    env = make_env(tmp_path, environ={"PATH": str(root / "shims")})
    assert installs.shim_target(env, root / "shims" / "python") == str(new)
    env = make_env(tmp_path, environ={"PATH": str(root / "shims"), "PYENV_VERSION": "3.10.13"})
    assert installs.shim_target(env, root / "shims" / "python") == str(old)
    finding = doctor.check_python_path(env)
    assert finding.code == "AF-PY-003" and finding.details["pythons"] == [str(root / "shims" / "python")]
    assert env.run.calls == []  # type: ignore[attr-defined]


def test_windows_path_store_alias_and_venv(tmp_path: Path) -> None:
    venv = tmp_path / "proj" / ".venv"
    exe = make_venv(venv, windows=True)
    apps = tmp_path / "AppData" / "Local" / "Microsoft" / "WindowsApps"
    make_exe(apps / "python.exe")
    make_exe(apps / "python3.exe")
    win = lambda p: str(p).replace("/", "\\")  # noqa: E731 - tiny local helper
    env = make_env(
        tmp_path,
        platform="win32",
        machine="AMD64",
        executable=win(exe),
        prefix=win(venv),
        base_prefix="C:\\Python311",
        environ={"Path": f"{win(exe.parent)};{win(apps)}"},
    )
    assert env.which_all("python") == [str(exe), str(apps / "python.exe")]
    finding = doctor.check_python_path(env)
    # `python` is the venv, but `python3` opens the Store
    assert (finding.status, finding.code) == ("warn", "AF-PY-001")
    assert "Microsoft Store alias" in finding.message and "App execution aliases" in finding.fix
    assert "`python` on PATH" not in finding.message

    make_exe(venv / "Scripts" / "pip.exe", "MZ launcher")
    assert doctor.check_pip(env).status == "ok"


def test_pip_of_another_interpreter_warns(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    other = make_exe(tmp_path / "sys" / "bin" / "python3")
    make_exe(tmp_path / "sys" / "bin" / "pip", f"#!{other}\nimport pip\n")
    env.environ["PATH"] = f"{other.parent}:{Path(env.executable).parent}"
    finding = doctor.check_pip(env)
    assert (finding.status, finding.code) == ("warn", "AF-PY-004")
    assert str(other) in finding.message
    assert f"{env.executable} -m pip install" in finding.fix


def test_pip_in_own_scripts_dir_or_long_shebang_is_ok(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    make_exe(Path(env.executable).parent / "pip", f"#!{env.executable}\n")
    assert doctor.check_pip(env).status == "ok"
    # pip writes this form when the interpreter path is longer than the kernel's shebang limit
    elsewhere = tmp_path / "tools"
    make_exe(elsewhere / "pip", f"#!/bin/sh\n'''exec' \"{env.executable}\" \"$0\" \"$@\"\n' '''\n")
    env.environ["PATH"] = f"{elsewhere}:{env.environ['PATH']}"
    assert doctor.check_pip(env).status == "ok"


def test_pip_shim_is_asked_for_its_site_packages(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    shims = tmp_path / "shims"
    pip = make_exe(shims / "pip", "#!/usr/bin/env bash\nexec pyenv exec pip\n")
    env.environ["PATH"] = f"{shims}"
    env.run = fake_runner(
        {f"{pip} --version": (0, "pip 24.0 from /opt/py/lib/python3.11/site-packages/pip (python 3.11)\n")}
    )
    finding = doctor.check_pip(env)
    assert (finding.status, finding.code) == ("warn", "AF-PY-004")
    assert "/opt/py/lib/python3.11/site-packages/pip" in finding.message
    env.run = fake_runner(
        {
            f"{pip} --version": (
                0,
                f"pip 24.0 from {env.prefix}/lib/python3.11/site-packages/pip (python 3.11)\n",
            )
        }
    )
    assert doctor.check_pip(env).status == "ok"

    # with a python shim beside it, the (memoised) python shim answer is used: no slow `pip --version`
    make_exe(shims / "python", "#!/usr/bin/env bash\nexec pyenv exec python\n")
    env = make_env(tmp_path, environ={"PATH": str(shims)})
    env.run = fake_runner(
        {f"{shims / 'python'} -c import sys; print(sys.executable)": (0, "/opt/py/bin/python\n")}
    )
    finding = doctor.check_pip(env)
    assert finding.code == "AF-PY-004" and "/opt/py/bin/python" in finding.message
    doctor.check_python_path(env)
    assert [c[0] for c in env.run.calls] == [str(shims / "python")]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- conda channels


def test_condarc_with_defaults_warns_with_conda_forge_fix(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    (env.home / ".condarc").write_text("channels:\n  - defaults\n")
    finding = doctor.check_conda_channels(env)
    assert (finding.status, finding.code) == ("warn", "AF-CONDA-001")
    assert "defaults" in finding.message and str(env.home / ".condarc") in finding.message
    for command in (
        "conda config --remove channels defaults",
        "conda config --add channels conda-forge",
        "conda config --set channel_priority strict",
    ):
        assert command in finding.fix
    assert "200" in finding.fix


def test_condarc_outside_home_gets_a_file_option(tmp_path: Path) -> None:
    rc = tmp_path / "site.condarc"
    rc.write_text("channels: [conda-forge, 'https://repo.anaconda.com/pkgs/main']\n")
    env = make_env(tmp_path)
    env.environ["CONDARC"] = str(rc)
    finding = doctor.check_conda_channels(env)
    assert finding.code == "AF-CONDA-001"
    assert f"conda config --file {rc} --remove channels defaults" in finding.fix


def test_conda_forge_only_env_is_ok(tmp_path: Path) -> None:
    root = tmp_path / "miniforge3"
    exe = make_conda(
        root, {"python": "https://conda.anaconda.org/conda-forge/linux-64", "numpy": "conda-forge"}
    )
    (root / ".condarc").write_text("channels:\n  - conda-forge\nchannel_priority: strict\n")
    env = make_env(tmp_path, executable=str(exe), prefix=str(root), base_prefix=str(root))
    finding = doctor.check_conda_channels(env)
    assert finding.status == "ok", finding.message
    assert finding.details["installed_channels"] == {"conda-forge": 2}


def test_conda_without_channels_config_uses_defaults_implicitly(tmp_path: Path) -> None:
    root = tmp_path / "miniconda3"
    exe = make_conda(
        root,
        {
            "python": "https://repo.anaconda.com/pkgs/main/linux-64",
            "openssl": "pkgs/main",
            "zlib": "conda-forge",
        },
    )
    env = make_env(tmp_path, executable=str(exe), prefix=str(root), base_prefix=str(root))
    finding = doctor.check_conda_channels(env)
    assert (finding.status, finding.code) == ("warn", "AF-CONDA-001")
    assert "conda uses `defaults`" in finding.message
    assert finding.details["anaconda_packages"] == ["openssl", "python"]
    assert "base install is miniconda" in finding.message
    assert "--override-channels -c conda-forge" in finding.fix


def test_defaults_remapped_to_a_private_mirror_is_ok(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    (env.home / ".condarc").write_text(
        "channels:\n  - defaults\ndefault_channels:\n  - https://artifactory.example.com/conda/main\n"
    )
    assert doctor.check_conda_channels(env).status == "ok"


def test_no_conda_is_ok(tmp_path: Path) -> None:
    finding = doctor.check_conda_channels(make_env(tmp_path))
    assert finding.status == "ok" and "not in use" in finding.message


@pytest.mark.parametrize(
    ("channel", "anaconda"),
    [
        ("defaults", True),
        ("main", True),
        ("anaconda", True),
        ("pkgs/r", True),
        ("https://repo.anaconda.com/pkgs/main/linux-64", True),
        ("https://conda.anaconda.org/anaconda/noarch", True),
        ("conda-forge", False),
        ("https://conda.anaconda.org/conda-forge/linux-64", False),
        ("pytorch", False),
        ("nvidia", False),
    ],
)
def test_anaconda_channel_classification(channel: str, anaconda: bool) -> None:
    assert installs.is_anaconda_channel(channel) is anaconda


# --------------------------------------------------------------------------- editor


def test_strip_jsonc_keeps_strings_and_drops_comments_and_trailing_commas() -> None:
    text = '{\n  // comment\n  "url": "http://x//y", /* block */ "a": [1, 2,],\n  "s": "q\\"//",\n}\n'
    assert json.loads(doctor.strip_jsonc(text)) == {"url": "http://x//y", "a": [1, 2], "s": 'q"//'}


def test_vscode_interpreter_mismatch_warns(tmp_path: Path) -> None:
    env = make_env(tmp_path, cwd=tmp_path / "proj" / "src")
    env.cwd.mkdir(parents=True)
    other = make_venv(tmp_path / "proj" / "old-env")
    settings = tmp_path / "proj" / ".vscode" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(
        '{\n  // picked last year\n  "python.defaultInterpreterPath": '
        '"${workspaceFolder}/old-env/bin/python",\n  "editor.rulers": [110,],\n}\n'
    )
    finding = doctor.check_editor(env)
    assert (finding.status, finding.code) == ("warn", "AF-EDITOR-001")
    assert str(other) in finding.message and env.executable in finding.fix

    # a folder (the venv itself) is accepted by VS Code and matches the running interpreter
    settings.write_text('{"python.defaultInterpreterPath": "${workspaceFolder}/.venv"}')
    assert doctor.check_editor(env).status == "ok"

    settings.write_text('{"python.pythonPath": "~/gone/bin/python"}')
    missing = doctor.check_editor(env)
    assert missing.code == "AF-EDITOR-001" and "does not exist" in missing.message


def test_no_vscode_settings_is_ok(tmp_path: Path) -> None:
    finding = doctor.check_editor(make_env(tmp_path))
    assert finding.status == "ok" and "no .vscode/settings.json" in finding.message


# --------------------------------------------------------------------------- torch / CUDA / MPS


def test_torch_missing_warns_and_broken_import_fails(tmp_path: Path) -> None:
    findings = doctor.check_torch(make_env(tmp_path), device_ops=False)
    assert [(f.check, f.status, f.code) for f in findings] == [("torch", "warn", "AF-TORCH-001")]
    assert 'install "aiforge[ml]"' in findings[0].fix

    env = make_env(tmp_path, import_module=fake_import({"torch": OSError("libcudnn.so.9: cannot open")}))
    broken = doctor.check_torch(env, device_ops=False)[0]
    assert (broken.status, broken.code) == ("fail", "AF-TORCH-002")
    assert "libcudnn" in broken.message and "--force-reinstall" in broken.fix


def test_cpu_torch_with_nvidia_driver_is_af_cuda_001(tmp_path: Path) -> None:
    run = fake_runner({"nvidia-smi": (0, SMI_OK.format(cuda="12.4"))})
    env = make_env(tmp_path, run=run, import_module=fake_import({"torch": fake_torch()}))
    findings = doctor.check_torch(env, device_ops=False)
    assert by_check(findings, "torch").message == "torch 2.5.1+cpu (CPU build)"
    cuda = by_check(findings, "cuda")
    assert (cuda.status, cuda.code) == ("fail", "AF-CUDA-001")
    assert "550.54.15" in cuda.message
    assert "--index-url https://download.pytorch.org/whl/cu124" in cuda.fix


def test_driver_older_than_torch_cuda(tmp_path: Path) -> None:
    torch = fake_torch(cuda="12.8", available=False)
    env = make_env(
        tmp_path,
        run=fake_runner({"nvidia-smi": (0, SMI_OK.format(cuda="11.4"))}),
        import_module=fake_import({"torch": torch}),
    )
    cuda = doctor.check_cuda(env, torch, doctor.nvidia_smi(env))
    assert (cuda.status, cuda.code) == ("fail", "AF-CUDA-003")
    assert (
        "update the nvidia driver" in cuda.fix.lower() and "whl/cu" not in cuda.fix
    )  # no wheel is old enough for CUDA 11.4

    env.run = fake_runner({"nvidia-smi": (0, SMI_OK.format(cuda="12.2"))})
    torch.cuda.is_available = lambda: True
    minor = doctor.check_cuda(env, torch, doctor.nvidia_smi(env))
    assert (minor.status, minor.code) == ("warn", "AF-CUDA-003")  # minor-version compatibility
    assert "whl/cu121" in minor.fix


def test_cuda_build_without_driver_suggests_cpu_wheel(tmp_path: Path) -> None:
    torch = fake_torch(cuda="12.4")
    env = make_env(tmp_path)
    cuda = doctor.check_cuda(env, torch, doctor.nvidia_smi(env))
    assert (cuda.status, cuda.code) == ("warn", "AF-CUDA-002")
    assert "whl/cpu" in cuda.fix


def test_cuda_hidden_by_cuda_visible_devices(tmp_path: Path) -> None:
    torch = fake_torch(cuda="12.4", available=False)
    env = make_env(tmp_path, run=fake_runner({"nvidia-smi": (0, SMI_OK.format(cuda="12.4"))}))
    env.environ["CUDA_VISIBLE_DEVICES"] = ""
    cuda = doctor.check_cuda(env, torch, doctor.nvidia_smi(env))
    assert (cuda.status, cuda.code) == ("fail", "AF-CUDA-002")
    assert "CUDA_VISIBLE_DEVICES=''" in cuda.fix


def test_nvidia_smi_failing_means_driver_not_loaded(tmp_path: Path) -> None:
    out = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    env = make_env(tmp_path, run=fake_runner({"nvidia-smi": (9, out)}))
    cuda = doctor.check_cuda(env, fake_torch(cuda="12.4"), doctor.nvidia_smi(env))
    assert (cuda.status, cuda.code) == ("fail", "AF-CUDA-002")
    assert "couldn't communicate" in cuda.message


def test_working_cuda_is_ok_and_lists_gpus(tmp_path: Path) -> None:
    run = fake_runner(
        {
            "nvidia-smi": (0, SMI_OK.format(cuda="12.4")),
            "nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader": (
                0,
                "0, RTX 4090, 24564 MiB\n",
            ),
        }
    )
    env = make_env(tmp_path, run=run)
    cuda = doctor.check_cuda(env, fake_torch(cuda="12.1", available=True, count=1), doctor.nvidia_smi(env))
    assert cuda.status == "ok" and "1 GPU(s)" in cuda.message
    assert cuda.details["nvidia_smi"]["gpus"] == ["0, RTX 4090, 24564 MiB"]


def test_mps_on_macos(tmp_path: Path) -> None:
    arm = make_env(tmp_path, platform="darwin", machine="arm64")
    missing = doctor.check_mps(arm, fake_torch(mps=False))
    assert missing is not None and (missing.status, missing.code) == ("warn", "AF-MPS-001")
    ok = doctor.check_mps(arm, fake_torch(mps=True))
    assert ok is not None and ok.status == "ok"

    rosetta = make_env(
        tmp_path,
        platform="darwin",
        machine="x86_64",
        run=fake_runner({"sysctl -n sysctl.proc_translated": (0, "1\n")}),
    )
    translated = doctor.check_mps(rosetta, fake_torch())
    assert translated is not None and translated.code == "AF-MPS-001" and "arm64" in translated.fix
    assert doctor.check_mps(make_env(tmp_path), fake_torch()) is None  # not on Linux

    # macOS never asks nvidia-smi
    findings = doctor.check_torch(
        make_env(
            tmp_path,
            platform="darwin",
            machine="arm64",
            import_module=fake_import({"torch": fake_torch(mps=True)}),
        ),
        device_ops=False,
    )
    assert [f.check for f in findings] == ["torch", "cuda", "mps"]


def test_device_failure_and_wrong_result_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    env = make_env(tmp_path)
    a, b = torch.randn(doctor.MATMUL_N, doctor.MATMUL_N), torch.randn(doctor.MATMUL_N, doctor.MATMUL_N)
    ref = a.double() @ b.double()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("MPS backend out of memory\nmore")

    monkeypatch.setattr(gpu, "_timed_matmul", boom)
    failed = doctor.check_device(env, torch, "mps", a, b, ref)
    assert (failed.status, failed.code) == ("fail", "AF-MPS-002")
    assert "MPS backend out of memory" in failed.message

    monkeypatch.setattr(gpu, "_timed_matmul", lambda torch, device, a, b: ((a @ b) * 1.01, 1.0))
    wrong = doctor.check_device(env, torch, "cpu", a, b, ref)
    assert (wrong.status, wrong.code) == ("fail", "AF-TORCH-003")
    assert "WRONG RESULT" in wrong.message


def test_optional_packages(tmp_path: Path) -> None:
    versions = {"transformers": "4.50.0", "sentence-transformers": "3.4.1"}
    findings = doctor.check_packages(make_env(tmp_path, dist_version=versions.get))
    assert [(f.check, f.status) for f in findings] == [
        ("pkg:transformers", "ok"),
        ("pkg:timm", "warn"),
        ("pkg:sentence-transformers", "ok"),
    ]
    assert findings[1].code == "AF-PKG-001" and "aiforge[ml]" in findings[1].fix


# --------------------------------------------------------------------------- HF cache, disk, memory


def test_hf_cache_location_size_and_offline(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    blob = hf_home / "hub" / "models--org--m" / "blobs" / "abc"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x" * 1000)
    snap = hf_home / "hub" / "models--org--m" / "snapshots" / "rev"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(blob)  # must not be counted twice
    env = make_env(tmp_path, environ={"PATH": "", "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    finding = doctor.check_hf_cache(env)
    assert finding.status == "ok"
    assert finding.details["path"] == str(hf_home / "hub") and finding.details["source"] == "HF_HOME"
    assert finding.details["size_bytes"] == 1000 and finding.details["models"] == 1
    assert "offline (HF_HUB_OFFLINE)" in finding.message and "writable" in finding.message

    env.environ["HF_HUB_CACHE"] = str(tmp_path / "empty")  # wins over HF_HOME, like huggingface_hub
    empty = doctor.check_hf_cache(env)
    assert (empty.status, empty.code) == ("warn", "AF-HF-001") and "nothing can load" in empty.message


def test_hf_cache_not_writable_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = make_env(tmp_path, environ={"PATH": "", "HF_HOME": str(blocker / "hf")})
    finding = doctor.check_hf_cache(env)
    assert (finding.status, finding.code) == ("fail", "AF-HF-001")
    assert "HF_HOME" in finding.fix


def test_dir_size_walk_is_capped(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"f{i}").write_bytes(b"12")
    assert doctor.dir_size(tmp_path) == (20, True)
    size, complete = doctor.dir_size(tmp_path, max_entries=3)
    assert not complete and size <= 6


@pytest.mark.parametrize(("free", "status"), [(500 * GiB, "ok"), (5 * GiB, "warn"), (GiB // 2, "fail")])
def test_disk_thresholds(tmp_path: Path, free: int, status: str) -> None:
    env = make_env(tmp_path, disk_usage=lambda path: (free, 1000 * GiB))
    env.environ["HF_HOME"] = str(tmp_path / "hf")
    findings = doctor.check_disk(env)
    assert len(findings) == 1  # cwd and the HF cache share a filesystem: reported once
    assert findings[0].status == status
    if status != "ok":
        assert findings[0].code == "AF-DISK-001" and "HF_HOME" in findings[0].fix


def test_memory_from_proc_meminfo_and_psutil(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    1000000 kB\n")
    env = make_env(tmp_path, meminfo_path=meminfo)
    assert doctor.memory_info(env) == (1_024_000_000, 16_384_000_000)
    low = doctor.check_memory(env)
    assert (low.status, low.code) == ("warn", "AF-MEM-001")

    psutil = SimpleNamespace(virtual_memory=lambda: SimpleNamespace(available=8 * GiB, total=16 * GiB))
    mac = make_env(tmp_path, platform="darwin", import_module=fake_import({"psutil": psutil}))
    assert doctor.check_memory(mac).status == "ok"
    unknown = doctor.check_memory(make_env(tmp_path, platform="darwin", meminfo_path=meminfo))
    assert unknown.status == "ok" and "unknown" in unknown.message  # /proc is Linux-only


# --------------------------------------------------------------------------- whole runs


def test_run_checks_on_a_fabricated_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(
        tmp_path,
        run=fake_runner({"nvidia-smi": (0, SMI_OK.format(cuda="12.4"))}),
        import_module=fake_import({"torch": fake_torch()}),
    )
    (env.home / ".condarc").write_text("channels:\n  - defaults\n")
    findings = doctor.run_checks(env, device_ops=False)
    checks = [f.check for f in findings]
    for check in (
        "python",
        "python-env",
        "python-path",
        "pip",
        "conda-channels",
        "editor",
        "torch",
        "cuda",
        "pkg:transformers",
        "hf-cache",
        "disk:cwd",
        "memory",
    ):
        assert check in checks
    assert not any(c.startswith("device:") for c in checks)
    assert by_check(findings, "conda-channels").code == "AF-CONDA-001"
    assert by_check(findings, "cuda").code == "AF-CUDA-001"
    assert doctor.exit_code(findings) == 1
    json.dumps(doctor.to_json(findings))

    # a crashing check is reported, the others still run
    monkeypatch.setattr(runner, "check_editor", lambda env: 1 / 0)
    findings = doctor.run_checks(env, device_ops=False)
    crashed = by_check(findings, "editor")
    assert (crashed.status, crashed.code) == ("warn", "AF-DOCTOR-001")
    assert "ZeroDivisionError" in crashed.message and "memory" in [f.check for f in findings]


def test_run_checks_on_this_machine() -> None:
    pytest.importorskip("torch")
    findings = doctor.run_checks()
    cpu = by_check(findings, "device:cpu")
    assert cpu.status == "ok", cpu.message
    assert cpu.details["matmul_ms"] > 0 and cpu.details["max_rel_err"] < 1e-4
    assert "ms" in cpu.message
    assert by_check(findings, "python").status == "ok"
    data = doctor.to_json(findings)
    assert json.loads(json.dumps(data))["summary"]["ok"] >= 1


# --------------------------------------------------------------------------- plot fonts


@pytest.mark.parametrize(
    ("platform", "fix_words"),
    [
        ("linux", "apt-get install fonts-noto-cjk"),
        ("darwin", "Apple SD Gothic Neo"),
        ("win32", "Malgun Gothic"),
    ],
)
def test_no_hangul_font_warns_with_the_install_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, fix_words: str
) -> None:
    from aiforge.doctor import plots

    monkeypatch.setattr(plots, "hangul_font", lambda: None)
    finding = doctor.check_plot_fonts(make_env(tmp_path, platform=platform))
    assert (finding.check, finding.status, finding.code) == ("plot-fonts", "warn", "AF-FONT-001")
    assert fix_words in finding.fix


def test_hangul_font_found_is_ok_and_no_matplotlib_needs_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiforge.doctor import plots

    monkeypatch.setattr(plots, "hangul_font", lambda: "Noto Sans CJK KR")
    found = doctor.check_plot_fonts(make_env(tmp_path))
    assert found.status == "ok" and "Noto Sans CJK KR" in found.message
    monkeypatch.setattr(plots, "hangul_font", lambda: None)
    no_plots = doctor.check_plot_fonts(make_env(tmp_path, dist_version=lambda name: None))
    assert no_plots.status == "ok" and "matplotlib not installed" in no_plots.message
