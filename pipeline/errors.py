"""Every error faceqc raises on purpose, under one base class.

The command line maps :class:`FaceqcError` to one line on stderr and its ``exit_code`` (2: the
job refused to start, nothing was done), never a traceback.  Anything else is a bug.

A failure of one input file is not an error of the job: stages turn it into that row's
``status`` and ``error`` (:class:`RowError`), and the job goes on.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from typing import Callable, Optional


class FaceqcError(Exception):
    """Base of faceqc's own errors: the message is one line that says what to do."""

    exit_code = 2


class ConfigError(FaceqcError, ValueError):
    """The configuration is wrong: the job refuses to start."""


class InputError(FaceqcError, ValueError):
    """An input the user named does not exist, cannot be listed or cannot be parsed."""


class OutputError(FaceqcError, ValueError):
    """The output location cannot be used (not writable, holds another run, locked...)."""


class ModelError(FaceqcError, RuntimeError):
    """A model is missing, corrupt or does not fit its contract; the message names the model
    and how to get it."""


class MissingDependency(FaceqcError, ImportError):
    """An optional package is not installed; the message names the pip install to run."""


class RunError(FaceqcError):
    """A run finished without producing every row (it stays uncommitted and resumes)."""

    exit_code = 1


class RowError(FaceqcError):
    """One input row failed: ``status`` (``read_error``, ``decode_error``, ``too_large``...) and
    the message become that row's columns; the row flows on."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def install_hint(extra: str) -> str:
    """The install line of one of faceqc's extras (run in faceqc's folder, through its lock)."""
    return f'pip install -c constraints.txt -e ".[{extra}]" (in the faceqc folder)'


def require(module: str, extra: str, purpose: str, pip_name: str | None = None):
    """Import ``module`` or raise MissingDependency naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pkg = pip_name or module.split(".")[0]
        raise MissingDependency(f"{purpose} needs the Python package '{pkg}', which is not installed: "
                                f"{install_hint(extra)}") from e


@contextlib.contextmanager
def errors_as(cls: type, what: str, mask: Optional[Callable[[str], str]] = None):
    """Inside the block, any exception but faceqc's own becomes one ``cls`` error reading
    "what: Type: message" (passed through ``mask``, e.g. secret redaction, when given)."""
    try:
        yield
    except FaceqcError:
        raise
    except Exception as e:  # noqa: BLE001 - credentials, endpoints, permissions, parsers...
        text = f"{what}: {type(e).__name__}: {e}"
        raise cls(mask(text) if mask else text) from e


# secrets never reach a message: every error and log line about a store goes through this
SECRET_WORDS = ("key", "secret", "token", "password", "passwd", "credential", "sas", "connection_string",
                "signature", "auth")


# every secret of the storage options this process has opened a store with (fs.get_fs), so that
# messages written far from the options (retry logs) are masked too
_SEEN_SECRETS: set = set()
# signed-URL query parameters (S3 presigned, Azure SAS, GCS signed URLs) that a client's error
# message may quote
_URL_SECRET = re.compile(r"(?i)([?&](?:sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|"
                         r"x-goog-signature|x-goog-credential|token|key)=)[^&\s'\"]+")


def remember_secrets(storage_options: dict | None) -> None:
    """Mask these options' secrets in every later :func:`redact` of this process."""
    _SEEN_SECRETS.update(_secrets(storage_options))


def _secrets(storage_options: dict | None) -> list:
    secrets: list = []

    def walk(v, secret=False):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, secret or any(w in str(k).lower() for w in SECRET_WORDS))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x, secret)
        elif secret and isinstance(v, str) and len(v) >= 4:
            secrets.append(v)

    walk(storage_options or {})
    return secrets


def redact(text: str, storage_options: dict | None) -> str:
    """``text`` with every secret masked: the string values (at any depth) of ``storage_options``
    and of the options this process opened stores with, whose key names a key, secret, token,
    password, credential, SAS or connection string; and signed-URL query parameters."""
    for s in sorted(set(_secrets(storage_options)) | _SEEN_SECRETS, key=len, reverse=True):
        text = text.replace(s, "***")
    return _URL_SECRET.sub(r"\1***", text)
