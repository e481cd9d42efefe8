"""What is missing is reported before any work, in one line that names what to install, with exit
code 2 and no traceback: each documented extra, the sample photos and the Ray components.  The
packages are hidden from the import system here (they are installed in the test environment)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from pipeline import fs
from pipeline.cli import main

REAL_FIND_SPEC = importlib.util.find_spec


@pytest.fixture
def hide(monkeypatch):
    """hide("pkg", ...): those packages look uninstalled to find_spec and to import."""

    def _hide(*names):
        def find_spec(name, *a, **kw):
            if name.split(".")[0] in names:
                return None
            return REAL_FIND_SPEC(name, *a, **kw)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        for n in names:
            for mod in [m for m in sys.modules if m == n or m.startswith(n + ".")]:
                monkeypatch.delitem(sys.modules, mod)
            monkeypatch.setitem(sys.modules, n, None)  # `import n` raises ImportError
        fs._fs_cached.cache_clear()

    yield _hide
    fs._fs_cached.cache_clear()


def _one_line_exit_2(argv, capsys, *words):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("faceqc: error: ") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.mark.parametrize("uri,extra,package", [("gs://bucket/photos/", "gcs", "gcsfs"),
                                               ("az://container/photos/", "azure", "adlfs"),
                                               ("s3://bucket/photos/", "s3", "s3fs")])
def test_bucket_without_its_filesystem(uri, extra, package, hide, capsys, tmp_path):
    hide(package)
    _one_line_exit_2(["score", uri, "--out", str(tmp_path / "out")], capsys, f'pip install -c constraints.txt -e ".[{extra}]"')
    assert not (tmp_path / "out").exists()


def test_production_model_without_onnxruntime(hide, capsys, tmp_path):
    hide("onnxruntime")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"x")
    cfg = tmp_path / "prod.yaml"
    cfg.write_text("fiqa: {backend: onnx, model: /models/ediffiqa.onnx}\n")
    _one_line_exit_2(["score", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--config", str(cfg)], capsys,
                     "fiqa backend 'onnx'", "onnxruntime", 'pip install -c constraints.txt -e ".[prod]"')
    assert not (tmp_path / "out").exists()


def test_pyiqa_metric_without_pyiqa(hide, capsys, tmp_path):
    hide("pyiqa")
    cfg = tmp_path / "pyiqa.yaml"
    cfg.write_text("iqa: {model_backend: pyiqa, model: /w/musiq.pth, pyiqa_metric: musiq}\n")
    _one_line_exit_2(["explain", str(tmp_path / "x.jpg"), "--config", str(cfg)], capsys,
                     'pip install -c constraints.txt -e ".[pyiqa]"')


def test_demo_and_bench_without_the_sample_photos(hide, capsys, tmp_path):
    hide("skimage")
    _one_line_exit_2(["demo", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")], capsys,
                     'pip install -c constraints.txt -e ".[samples]"')
    _one_line_exit_2(["bench", "-n", "4", "--workdir", str(tmp_path / "b")], capsys, 'pip install -c constraints.txt -e ".[samples]"')


def test_without_ray_data(hide, capsys, tmp_path):
    hide("ray")
    (tmp_path / "a.jpg").write_bytes(b"x")
    _one_line_exit_2(["score", str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out")], capsys,
                     'pip install "ray[data]==2.60.0"')


def test_ray_client_address_without_ray_client(hide, capsys, tmp_path):
    hide("grpc")
    (tmp_path / "a.jpg").write_bytes(b"x")
    _one_line_exit_2(["score", str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out"), "--address",
                      "ray://head:10001"], capsys, 'pip install "ray[client]==2.60.0"')
