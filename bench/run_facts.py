"""What a torch benchmark records beside its figures: when it ran, on what, with which torch, how loaded."""

from __future__ import annotations

import datetime
import os
import platform
from typing import Any


def torch_run_facts(torch: Any, device: Any) -> dict[str, Any]:
    """Date, machine, CPU count, torch version and threads, device, and the load average as the run ends (a
    figure from a machine other jobs were using is only comparable through its same-run ratio)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def facts_line(facts: dict[str, Any]) -> str:
    """The facts as the first line of a benchmark's printout."""
    return (
        f"{facts['date']}  {facts['device']} ({facts['cpu_count']} CPUs, {facts['torch_threads']} torch threads), "
        f"torch {facts['torch']}, load average {facts['load_average_1m_at_end']}"
    )
