"""Issue 4, point 7: the seed workload as a user runs it. examples/thumbnails builds its image
from a static binary of ours, and run.sh submits one array child per image through the real aws
CLI to `barge up --runner docker`; every image gets its thumbnail, the inputs stay untouched."""

from __future__ import annotations

import os
import pathlib
import struct
import subprocess

import pytest

from barge_helpers import REPO_ROOT, aws_cli_path, docker, why_no_docker

_WHY_NOT = why_no_docker()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=f"example not run: {_WHY_NOT}")

EXAMPLE = REPO_ROOT / "examples" / "thumbnails"
IMAGE = "barge-examples/thumbnail:e2e"
IMAGES = 6


def png_size(path: pathlib.Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.fixture(scope="module")
def thumbnail_binary() -> pathlib.Path:
    """Builds the example's static binary and its image, as its README says."""
    out = subprocess.run([str(EXAMPLE / "build-image.sh")], env={**os.environ, "IMAGE": IMAGE},
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    assert docker("image", "inspect", IMAGE, check=False).returncode == 0
    return EXAMPLE / out.stdout.strip().splitlines()[-1]


def test_the_thumbnail_example_runs_one_child_per_image(server_factory, thumbnail_binary, tmp_path):
    images, thumbs = tmp_path / "images", tmp_path / "thumbnails"
    subprocess.run([str(thumbnail_binary), "--make-samples", str(images), str(IMAGES)], check=True)
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    srv = server_factory("thumbnails", runner="docker", vcpus=2, memory_mib=4096)
    try:
        env = {**os.environ, "BARGE_ENDPOINT": srv.endpoint, "IMAGE": IMAGE, "AWS": aws_cli_path()}
        out = subprocess.run([str(EXAMPLE / "run.sh"), str(images), str(thumbs)], env=env,
                             capture_output=True, text=True, timeout=300)
    finally:
        srv.close()
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{IMAGES} children" in out.stdout and "SUCCEEDED" in out.stdout, out.stdout
    made = sorted(p.name for p in thumbs.iterdir())
    assert made == [f"sample-{i:03}.thumb.png" for i in range(IMAGES)], made
    for p in thumbs.iterdir():
        assert png_size(p) == (128, 96), p
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before, "inputs are mounted read-only"
    assert docker("ps", "-aq", "--filter", "label=barge.attempt-id").stdout.split() == []
