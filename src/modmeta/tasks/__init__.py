"""Task families and episodes: sinusoids, function families, Omniglot, mini-ImageNet, CIFAR-FS,
CUB, your own arrays and data sets."""

from modmeta.tasks.base import TaskFamily
from modmeta.tasks.batch import LabelledBatch, TaskBatch
from modmeta.tasks.functions import FunctionFamily, Sinusoid
from modmeta.tasks.teacher import TeacherFamily
from modmeta.tasks.download import CorruptArchiveError, DownloadError, check_file, download_url
from modmeta.tasks.labelled import ClassificationFamily, DatasetExamples, Examples, split_classes
from modmeta.tasks.benchmarks import CIFARFS, CUB, MiniImageNet
from modmeta.tasks.omniglot import Omniglot, load_omniglot, verify_omniglot
from modmeta.tasks.modular import Compositions, FunctionSums, ModularFamily, Sines

__all__ = [
    "CIFARFS", "CUB", "ClassificationFamily", "Compositions", "CorruptArchiveError", "DatasetExamples", "DownloadError",
    "Examples", "FunctionFamily", "FunctionSums", "LabelledBatch", "MiniImageNet", "ModularFamily", "Omniglot",
    "Sines", "Sinusoid", "TaskBatch", "TaskFamily", "TeacherFamily",
    "check_file", "download_url", "load_omniglot", "split_classes", "verify_omniglot",
]
