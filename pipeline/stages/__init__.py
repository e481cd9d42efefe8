"""The pipeline, as data: its stages in order.  Executors (:mod:`pipeline.executor`) walk this
list and nothing else; the listing before it is the source (:mod:`pipeline.io.listing`) and the
part files after it the sink (:mod:`pipeline.io.parts`)."""

from .decode import DecodeStage
from .detect import DetectStage
from .fiqa import FIQAStage
from .fuse import FuseStage
from .iqa import IQAStage

STAGES = (DecodeStage, DetectStage, IQAStage, FIQAStage, FuseStage)

__all__ = ["STAGES", "DecodeStage", "DetectStage", "IQAStage", "FIQAStage", "FuseStage"]
