"""Build the Blender extension zip with Blender's own ``blender_ext.py`` (from the bpy wheel).

Steps: stage the files listed in ``blender_manifest.toml`` [build] paths into ``build/extension``,
build the ``near_blender`` wheel (and, with ``--wheels runtime``, download the pinned runtime wheels
it needs inside Blender: torch, safetensors, huggingface_hub, OpenEXR, simple-ocio, ... but never
numpy, which Blender ships), add them to the staged manifest, ``validate`` it, ``build`` the zip and
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
# packages such as peft/spconv/gsplat are optional and not bundled).
RUNTIME_REQUIREMENTS = ["torch", "safetensors", "huggingface_hub", "OpenEXR", "simple-ocio", "tqdm", "PyYAML"]
NEVER_BUNDLE = ("numpy-",)
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


def stage(out_stage: Path, wheels: str) -> list[str]:
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
        run([py, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(wheel_dir),
             "-c", str(REPO / "requirements.txt"), *pinned(RUNTIME_REQUIREMENTS)])  # fmt: skip
        for w in wheel_dir.glob("*.whl"):
            if w.name.startswith(NEVER_BUNDLE):
                w.unlink()
    names = sorted(w.name for w in wheel_dir.glob("*.whl"))
    platform_specific = any(not n.endswith("-none-any.whl") for n in names)
    text = (REPO / "blender_manifest.toml").read_text()
    extra = "wheels = [\n" + "".join(f'  "./wheels/{n}",\n' for n in names) + "]\n"
    if platform_specific:
        extra += 'platforms = ["linux-x64"]\n'
    # Top-level keys must come before the first table.
    i = text.index("\n[")
    shutil.copy2(REPO / "blender_manifest.toml", out_stage / "blender_manifest.toml")
    (out_stage / "blender_manifest.toml").write_text(text[: i + 1] + extra + text[i + 1 :])
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="dist", help="output folder for the zip")
    ap.add_argument("--stage", default=str(REPO / "build" / "extension"), help="staging folder")
    ap.add_argument("--wheels", choices=["none", "runtime"], default="runtime",
                    help="'none': only the near_blender wheel (needs torch etc. in Blender's Python); "
                         "'runtime': also bundle the pinned runtime wheels")  # fmt: skip
    args = ap.parse_args(argv)
    script = blender_ext_script()
    stage_dir = Path(args.stage)
    wheels = stage(stage_dir, args.wheels)
    print(f"staged {stage_dir} with {len(wheels)} wheel(s)")
    run([sys.executable, str(script), "validate", str(stage_dir)])
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(
        run(
            [sys.executable, str(script), "build", "--source-dir", str(stage_dir), "--output-dir", str(out)]
        ).strip()
    )
    for z in sorted(out.glob("near_blender-*.zip")):
        run([sys.executable, str(script), "validate", str(z)])
        print(f"validated {z} ({z.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
