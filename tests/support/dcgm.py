"""A dcgm-exporter /metrics page in the shape NVIDIA documents for MIG (the GPU Operator's
"GPU Telemetry" page, an A100 in MIG mode): a series per GPU without GPU_I_ID and one per GPU
instance with GPU_I_ID and GPU_I_PROFILE, labelled by the parent's index and UUID."""

from __future__ import annotations

from collections.abc import Mapping

GR_ENGINE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
SM_ACTIVE = "DCGM_FI_PROF_SM_ACTIVE"


def dcgm_page(
    instances: Mapping[str, Mapping[int, float]],
    field: str = GR_ENGINE,
    uuid_label: str = "UUID",
    profile: str = "1g.10gb",
) -> str:
    """`instances`: parent GPU UUID -> GPU instance id -> activity."""
    lines = [
        "# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).",
        "# TYPE DCGM_FI_DEV_POWER_USAGE gauge",
    ]
    for index, uuid in enumerate(instances):
        lines.append(
            f'DCGM_FI_DEV_POWER_USAGE{{gpu="{index}",{uuid_label}="{uuid}",device="nvidia{index}",'
            f'modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-1"}} 409.692000'
        )
    lines += [f"# HELP {field} Ratio of time the engine is active.", f"# TYPE {field} gauge"]
    for index, (uuid, per_gi) in enumerate(instances.items()):
        common = f'gpu="{index}",{uuid_label}="{uuid}",device="nvidia{index}",Hostname="gpu-node-1"'
        lines.append(f"{field}{{{common}}} 0.995630")  # the whole GPU: not an instance
        for gpu_instance, ratio in per_gi.items():
            lines.append(
                f'{field}{{{common},GPU_I_PROFILE="{profile}",GPU_I_ID="{gpu_instance}"}} {ratio}'
            )
    return "\n".join(lines) + "\n"
