"""Model backends of the production tier (ONNX Runtime, torch/timm, pyiqa), behind the same
stage interfaces as the offline models.  Each backend imports its framework lazily and, when
it is missing, fails at construction with the exact `pip install` to run."""


def require(module: str, pip_name: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{purpose} needs {pip_name}: pip install '{pip_name}' "
                          f"(or pip install 'faceqc[prod]')") from e
