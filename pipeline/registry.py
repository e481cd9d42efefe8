"""The backend registry: every backend registers under (stage, name), in the style of timm's
``register_model`` / ``create_model``.

A backend is the swappable part of a stage: a decoder, a face detector, an IQA or a face-quality
model.  It registers in its own module with a builder (called in the stage's ``setup()``, once per
worker or actor), the models it uses (ids, sources, licences: what run summaries record), the
Python packages it needs (checked before any work, reported as one line naming the extra to
install), traits its stage reads (e.g. a detector's landmark layout), and a check of the settings
it needs.  Which backends a configuration runs is :meth:`Config.backends`; a new backend touches
only its own file (plus its import in ``pipeline/backends/__init__.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import ConfigError, MissingDependency, install_hint

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config
    from .models import ModelInfo


@dataclass(frozen=True)
class Backend:
    stage: str
    name: str
    build: Callable[["Config"], Any]
    models: Callable[["Config"], Sequence["ModelInfo"]] = lambda cfg: ()
    check: Optional[Callable[["Config"], None]] = None
    needs: Tuple[Tuple[str, str], ...] = ()  # (importable module, faceqc extra that installs it)
    traits: Dict[str, Any] = field(default_factory=dict)
    doc: str = ""

    def missing(self) -> List[str]:
        """The pip extras this backend needs that are not installed."""
        return [extra for module, extra in self.needs if importlib.util.find_spec(module) is None]

    def require(self) -> None:
        for module, extra in self.needs:
            if importlib.util.find_spec(module) is None:
                raise MissingDependency(f"{self.stage} backend '{self.name}' needs the Python package "
                                        f"'{module}', which is not installed: {install_hint(extra)}")


_BACKENDS: Dict[Tuple[str, str], Backend] = {}


def register(stage: str, name: str, *, models: Optional[Callable] = None, check: Optional[Callable] = None,
             needs: Sequence[Tuple[str, str]] = (), traits: Optional[dict] = None, doc: str = ""):
    """Decorator: register ``build`` (a class or function taking the Config) as a backend."""

    def deco(build):
        key = (stage, name)
        if key in _BACKENDS:
            raise ValueError(f"{stage} backend '{name}' is registered twice")
        _BACKENDS[key] = Backend(stage, name, build, models or (lambda cfg: ()), check, tuple(needs),
                                 dict(traits or {}), doc or (build.__doc__ or "").strip().split("\n")[0])
        return build

    return deco


def _load() -> None:
    importlib.import_module("pipeline.backends")  # each backend module registers itself


def names(stage: str) -> List[str]:
    _load()
    return sorted(n for s, n in _BACKENDS if s == stage)


def get(stage: str, name: str, setting: str = "") -> Backend:
    """The backend ``name`` of ``stage``; ``setting`` (the config key that chose it) names the
    mistake when there is none."""
    _load()
    spec = _BACKENDS.get((stage, name))
    if spec is None:
        raise ConfigError(f"{setting or stage + ' backend'}: '{name}' is unknown "
                          f"(registered: {', '.join(names(stage))})")
    return spec


def create(stage: str, name: str, cfg: "Config") -> Any:
    """Build a backend for a stage's setup(): its packages are checked first."""
    spec = get(stage, name)
    spec.require()
    return spec.build(cfg)


def selected(cfg: "Config") -> List[Backend]:
    """The backends a configuration runs, in pipeline order."""
    return [get(stage, name, setting) for stage, name, setting in cfg.backends()]


def check_config(cfg: "Config") -> None:
    """Every selected backend exists and accepts the settings it needs (ConfigError otherwise)."""
    for spec in selected(cfg):
        if spec.check is not None:
            spec.check(cfg)


def check_installed(cfg: "Config") -> None:
    """Every package the selected backends need is importable (MissingDependency otherwise)."""
    for spec in selected(cfg):
        spec.require()


def models_for(cfg: "Config") -> List["ModelInfo"]:
    """The models a configuration uses, in pipeline order, each once."""
    out, seen = [], set()
    for spec in selected(cfg):
        for m in spec.models(cfg):
            if m.id not in seen:
                seen.add(m.id)
                out.append(m)
    return out
