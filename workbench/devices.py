"""Where a model's weights go and in which dtype: checked before any weight is read.

A model that does not fit one device is spread over several by a ``device_map`` (accelerate's dispatch, as
``transformers.AutoModelForCausalLM.from_pretrained(device_map=...)`` does): ``"auto"``, ``"balanced"``,
``"balanced_low_0"``, ``"sequential"``, or a dict from module names to devices (``0``, ``"cuda:1"``, ``"cpu"``,
``"disk"``). Every check here raises one :class:`DeviceError` that names what is wrong and what would work, so a
CUDA device that does not exist or a dtype the device cannot multiply in fails in a second, not after minutes of
loading a 70B checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from workbench.errors import WorkbenchError

DEVICE_MAP_STRATEGIES: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")
"""accelerate's named placements: fill the visible GPUs (then CPU, then disk) by its own rule."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                                  "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
"""The weight dtypes a model can be loaded in, by the names the command line accepts."""

DeviceMap = str | dict[str, str | int]
"""A ``device_map`` as accelerate takes it."""


class DeviceError(WorkbenchError):
    """A device, device map or dtype that this machine cannot use."""


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bf16"`` / ``"bfloat16"`` / ``torch.bfloat16`` ... -> the torch dtype (floating point only)."""
    if isinstance(name, torch.dtype):
        if not name.is_floating_point:
            raise DeviceError(f"weights must be floating point, got {name}; use one of float32, bfloat16, float16")
        return name
    dtype = DTYPES.get(name.strip().lower())
    if dtype is None:
        raise DeviceError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return dtype


def check_device(device: str | torch.device) -> torch.device:
    """The device, if this machine has it (``cuda:3`` on a 2-GPU machine is refused with the count)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"cannot read device {device!r} ({err}); use e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'"
                          ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {device!r} needs CUDA, which this machine does not have (torch "
                              f"{torch.__version__}); use device='cpu'")
        if parsed.index is not None and parsed.index >= count:
            raise DeviceError(f"device {device!r} does not exist: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} needs Apple's MPS, which this machine does not have; use 'cpu'")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {device!r} is not supported; use 'cpu', 'cuda[:N]' or 'mps'")
    return parsed


def map_target_device(target: str | int) -> torch.device | None:
    """The torch device of one device-map value (``None`` for ``"disk"``, whose weights are read at call time)."""
    if isinstance(target, bool) or not isinstance(target, int | str):
        raise DeviceError(f"a device_map value must be a GPU index, 'cpu', 'cuda:N', 'mps' or 'disk', got {target!r}")
    if target == "disk":
        return None
    return check_device(f"cuda:{target}" if isinstance(target, int) else target)


def check_device_map(device_map: DeviceMap, *, module_names: set[str] | None = None) -> DeviceMap:
    """A device map every device of which exists here (and every module name of which, when given, exists)."""
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise DeviceError(f"unknown device_map {device_map!r}; use one of {', '.join(DEVICE_MAP_STRATEGIES)} "
                              "or a dict from module names to devices")
        return device_map
    if not isinstance(device_map, Mapping) or not device_map:
        raise DeviceError(f"a device_map dict must map module names to devices, got {device_map!r}")
    for module, target in device_map.items():
        try:
            map_target_device(target)
        except DeviceError as err:
            raise DeviceError(f"device_map[{module!r}]: {err}") from None
    if module_names is not None:
        unknown = sorted(name for name in device_map if name and name not in module_names)
        if unknown:
            raise DeviceError(f"device_map names modules the model does not have: {unknown}; module names look "
                              f"like {sorted(module_names)[:4]}")
    return dict(device_map)


def parse_device_map(text: str | None) -> DeviceMap | None:
    """A ``--device-map`` value: a strategy name (``auto`` ...) or a JSON object such as
    ``{"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.40": 1, "model.norm": 1, "lm_head": 1}``."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if not text.startswith("{"):
        return check_device_map(text)
    import json

    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise DeviceError(f"cannot read --device-map as JSON ({err.msg} at character {err.pos}); write e.g. "
                          '\'{"model.layers.0": 0, "model.layers.1": 1}\' or a strategy: '
                          f"{', '.join(DEVICE_MAP_STRATEGIES)}") from None
    return check_device_map(parsed)


def check_dtype_runs(dtype: torch.dtype, device: torch.device) -> None:
    """Refuse a dtype the device cannot compute in (one small matmul decides, as the model would do)."""
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{device} cannot compute in bfloat16 (compute capability < 8.0); use float16 or "
                          "float32")
    try:
        probe = torch.ones(2, 2, dtype=dtype, device=device)
        torch.nn.functional.linear(probe, probe).sum().item()
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"{device} cannot compute in {dtype} ({str(err).splitlines()[0]}); use float32") from None


def load_devices(device: str | None, device_map: Any, dtype: torch.dtype) -> list[torch.device]:
    """Check a load's placement before any weight is read: the devices it will use (``cpu`` for disk offload)."""
    if device is not None and device_map is not None:
        raise DeviceError("pass device or device_map, not both: a device_map already places every module")
    if device_map is None:
        devices = [check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))]
    elif isinstance(check_device_map(device_map), str):
        devices = [torch.device(f"cuda:{index}") for index in range(torch.cuda.device_count())] or [
            torch.device("cpu")]
    else:
        devices = [map_target_device(target) or torch.device("cpu") for target in device_map.values()]
    distinct = list(dict.fromkeys(devices))
    for placed in distinct:
        check_dtype_runs(dtype, placed)
    return distinct
