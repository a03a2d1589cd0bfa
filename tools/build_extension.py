"""Build the Blender extension zip with Blender's own ``blender_ext.py`` (from the bpy wheel).

Steps: stage the files listed in ``blender_manifest.toml`` [build] paths into ``build/extension``,
build the ``near_blender`` wheel (and, with ``--wheels runtime``, download the pinned runtime wheels
it needs inside Blender: torch, safetensors, huggingface_hub, OpenEXR, ... but never numpy or
OpenColorIO, which Blender ships), add them to the staged manifest, ``validate`` it, ``build`` the zip and
validate the zip.

Usage: ``python tools/build_extension.py --out dist [--wheels none|runtime]`` (``make extension``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Wheels the add-on needs at run time inside Blender (numpy comes with Blender; training-only
# packages such as peft/spconv/gsplat are optional and not bundled; simple-ocio / OpenColorIO only
# tone-map the CLI's PNGs -- inside Blender, Blender's own view transform does -- and Blender ships
# OpenColorIO's Python module itself, `bpy.utils.expose_bundled_modules()`).
RUNTIME_REQUIREMENTS = ["torch", "safetensors", "huggingface_hub", "OpenEXR", "tqdm", "PyYAML", "plyfile"]
NEVER_BUNDLE = ("numpy-", "opencolorio-")
# Blender's platform names -> the wheel platform tags pip may pick for them (Blender 5.0: CPython 3.11).
PLATFORM_TAGS: dict[str, list[str]] = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                  "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64", "macosx_14_0_arm64"],
}  # fmt: skip
BLENDER_PYTHON = "3.11"


def host_platform() -> str:
    """This machine's Blender platform name (the default ``--platform``)."""
    import platform

    system, machine = platform.system().lower(), platform.machine().lower()
    if system == "linux" and machine in ("x86_64", "amd64"):
        return "linux-x64"
    if system == "windows":
        return "windows-x64"
    if system == "darwin" and machine in ("arm64", "aarch64"):
        return "macos-arm64"
    raise SystemExit(f"build_extension: no wheels known for {system}/{machine}; pass --platform.")


# What the extension consists of (the manifest's paths_exclude_pattern describes the same set).
EXTENSION_FILES = ["__init__.py", "blender_manifest.toml", "README.md", "engine", "operators", "ui"]


def blender_ext_script() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise SystemExit("build_extension: the bpy module is not installed; run `make setup` first.")
    hits = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not hits:
        raise SystemExit("build_extension: blender_ext.py not found inside the bpy package.")
    return hits[-1]


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"build_extension: {' '.join(cmd[:4])} ... failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def pinned(names: list[str]) -> list[str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(0)
    out = []
    for n in names:
        key = n.lower().replace("_", "-")
        out.append("torch==2.13.0" if key == "torch" else pins.get(key, n))
    return out


def download_runtime(wheel_dir: Path, target: str, packages: list[str]) -> None:
    """The pinned runtime wheels (and what they need) for ``target`` into ``wheel_dir``.

    pip resolves dependencies with this machine's environment markers even when told another
    platform (a Windows torch would ask for Linux-only CUDA packages), so the set is resolved here,
    for this machine, and then each platform-specific wheel of it is fetched again, without
    dependencies, for the target's platform tags; pure-Python wheels serve every platform."""
    py = sys.executable
    resolved = wheel_dir.parent / ".resolved"
    shutil.rmtree(resolved, ignore_errors=True)
    run([py, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(resolved),
         "-c", str(REPO / "requirements.txt"), *pinned(packages)])  # fmt: skip
    tags = [a for tag in PLATFORM_TAGS[target] for a in ("--platform", tag)]
    for w in sorted(resolved.glob("*.whl")):
        if w.name.startswith(NEVER_BUNDLE):
            continue
        if w.name.endswith("-none-any.whl") or target == host_platform():
            shutil.copy2(w, wheel_dir / w.name)
            continue
        name, version = w.name.split("-")[:2]
        version = version.split("+")[0]  # a local build (torch 2.13.0+cpu) -> the released version
        run([py, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
             BLENDER_PYTHON, "--implementation", "cp", *tags, "-d", str(wheel_dir), f"{name}=={version}"])  # fmt: skip
    shutil.rmtree(resolved, ignore_errors=True)


def stage(
    out_stage: Path, wheels: str, target: str = "linux-x64", packages: list[str] | None = None
) -> list[str]:
    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    if out_stage.exists():
        shutil.rmtree(out_stage)
    out_stage.mkdir(parents=True)
    del manifest
    for rel in EXTENSION_FILES:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, out_stage / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, out_stage / rel)
    wheel_dir = out_stage / "wheels"
    wheel_dir.mkdir()
    py = sys.executable
    run(
        [
            py,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheel_dir),
            str(REPO),
        ]
    )
    if wheels == "runtime":
        download_runtime(wheel_dir, target, packages or RUNTIME_REQUIREMENTS)
    names = sorted(w.name for w in wheel_dir.glob("*.whl"))
    platform_specific = any(not n.endswith("-none-any.whl") for n in names)
    text = (REPO / "blender_manifest.toml").read_text()
    extra = "wheels = [\n" + "".join(f'  "./wheels/{n}",\n' for n in names) + "]\n"
    if platform_specific:
        extra += f'platforms = ["{target}"]\n'
    # Top-level keys must come before the first table.
    i = text.index("\n[")
    shutil.copy2(REPO / "blender_manifest.toml", out_stage / "blender_manifest.toml")
    (out_stage / "blender_manifest.toml").write_text(text[: i + 1] + extra + text[i + 1 :])
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="dist", help="output folder for the zip")
    ap.add_argument("--stage", default=str(REPO / "build" / "extension"), help="staging folder")
    ap.add_argument(
        "--platform",
        choices=sorted(PLATFORM_TAGS),
        default=None,
        help="Blender platform of the bundled wheels (default: this machine's); one zip each",
    )
    ap.add_argument(
        "--packages",
        default=None,
        help="comma-separated runtime packages to bundle instead of all (tests, smaller zips)",
    )
    ap.add_argument("--wheels", choices=["none", "runtime"], default="runtime",
                    help="'none': only the near_blender wheel (needs torch etc. in Blender's Python); "
                         "'runtime': also bundle the pinned runtime wheels")  # fmt: skip
    args = ap.parse_args(argv)
    script = blender_ext_script()
    stage_dir = Path(args.stage)
    target = args.platform or host_platform()
    packages = [p.strip() for p in args.packages.split(",")] if args.packages else None
    wheels = stage(stage_dir, args.wheels, target, packages)
    print(f"staged {stage_dir} with {len(wheels)} wheel(s)")
    run([sys.executable, str(script), "validate", str(stage_dir)])
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(
        run(
            [
                sys.executable,
                str(script),
                "build",
                "--source-dir",
                str(stage_dir),
                "--output-dir",
                str(out),
                *(["--split-platforms"] if any(not w.endswith("-none-any.whl") for w in wheels) else []),
            ]
        ).strip()
    )
    for z in sorted(out.glob("near_blender-*.zip")):
        run([sys.executable, str(script), "validate", str(z)])
        print(f"validated {z} ({z.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
