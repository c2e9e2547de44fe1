"""Task families and episodes: sinusoids, function families, Omniglot, your own arrays."""

from modmeta.tasks.base import TaskFamily
from modmeta.tasks.batch import TaskBatch
from modmeta.tasks.functions import FunctionFamily, Sinusoid
from modmeta.tasks.labelled import ClassificationFamily

__all__ = ["ClassificationFamily", "FunctionFamily", "Sinusoid", "TaskBatch", "TaskFamily"]
