"""faceqc: score the quality of face images at scale (Ray Data pipeline)."""

__version__ = "0.5.0"
SCHEMA_VERSION = "5"
