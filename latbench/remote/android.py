"""Parsers of what Android tools print: ``getprop``, ``dumpsys thermalservice``, ``onnxruntime_perf_test``.

Each parser takes the tool's text and returns plain values, or raises
:class:`ToolOutputError` with one line naming the tool, what was missing and
how the output began. Nothing here talks to a phone (``latbench.backends.adb``
does).
"""

from __future__ import annotations

import re
from typing import Any

from latbench.errors import LatbenchError


class ToolOutputError(LatbenchError):
    """A device tool printed something latbench cannot read."""


def _head(text: str, n: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat[:n]) if flat else "nothing"


_PROP = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]$")


def parse_getprop(text: str) -> dict[str, str]:
    """``adb shell getprop`` (``[key]: [value]`` lines) -> dict; refuses output with no property line."""
    props: dict[str, str] = {}
    bad = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        m = _PROP.match(line)
        if m:
            props[m.group("key")] = m.group("value")
        else:
            bad += 1
    if not props or bad > len(props):
        raise ToolOutputError(f"`getprop` printed no [key]: [value] properties (output began {_head(text)})")
    return props


_TEMP = re.compile(r"Temperature\{mValue=(?P<v>-?[\d.]+|NaN), mType=(?P<t>-?\d+), mName=(?P<n>[^,}]*)")
#: Android's Temperature types (android.os.Temperature)
TEMP_TYPES = {0: "cpu", 1: "gpu", 2: "battery", 3: "skin", 4: "usb_port", 5: "power_amplifier"}


def parse_thermalservice(text: str) -> dict[str, Any]:
    """``dumpsys thermalservice`` -> thermal status and temperatures (``cpu_c``: hottest CPU sensor)."""
    status_m = re.search(r"^\s*Thermal Status:\s*(\d+)", text, re.M)
    section = text
    hal = text.find("Current temperatures from HAL:")
    if hal >= 0:
        section = text[hal:]
        end = section.find("Current cooling devices")
        section = section[:end] if end > 0 else section
    temps: dict[str, float] = {}
    by_type: dict[str, list[float]] = {}
    for m in _TEMP.finditer(section):
        if m.group("v") == "NaN":
            continue
        v = float(m.group("v"))
        temps[m.group("n")] = v
        by_type.setdefault(TEMP_TYPES.get(int(m.group("t")), f"type{m.group('t')}"), []).append(v)
    if status_m is None or not temps:
        what = "a 'Thermal Status:' line" if status_m is None else "any Temperature{mValue=...} entry"
        raise ToolOutputError(f"`dumpsys thermalservice` printed no {what} (output began {_head(text)})")
    return {
        "thermal_status": int(status_m.group(1)),
        "cpu_c": max(by_type["cpu"]) if by_type.get("cpu") else None,
        "skin_c": max(by_type["skin"]) if by_type.get("skin") else None,
        "battery_c": max(by_type["battery"]) if by_type.get("battery") else None,
        "sensors": len(temps),
    }


_PERF_FIELDS = {
    "requests": re.compile(r"^Total inference requests:\s*(\d+)", re.M),
    "average_ms": re.compile(r"^Average inference time cost(?: total)?:\s*([\d.eE+-]+)\s*ms", re.M),
    "session_s": re.compile(r"^Session creation time cost:\s*([\d.eE+-]+)\s*s", re.M),
    "first_ms": re.compile(r"^First inference time cost:\s*([\d.eE+-]+)\s*ms", re.M),
}
_LATENCY = re.compile(r"^(?P<name>Min|Max|P50|P90|P95|P99|P999) Latency:\s*(?P<v>[\d.eE+-]+)\s*s\s*$", re.M)


def parse_perf_test(text: str) -> dict[str, Any]:
    """``onnxruntime_perf_test -s`` -> milliseconds: ``p50_ms`` (the sample latbench keeps), min / p90 / max, mean.

    The tool prints latencies in seconds (``P50 Latency: 0.0995086 s``) and
    the mean in milliseconds; all come back in milliseconds.
    """
    out: dict[str, Any] = {}
    for key, rx in _PERF_FIELDS.items():
        m = rx.search(text)
        if m:
            out[key] = float(m.group(1))
    lat = {m.group("name").lower(): float(m.group("v")) * 1e3 for m in _LATENCY.finditer(text)}
    labels = {"requests": "Total inference requests", "average_ms": "Average inference time cost"}
    missing = [labels[k] for k in ("requests", "average_ms") if k not in out] + [
        f"{k} Latency" for k in ("P50", "Min", "Max") if k.lower() not in lat
    ]
    if missing:
        raise ToolOutputError(
            f"`onnxruntime_perf_test` output lacks {', '.join(missing)} (run it with -s; output began {_head(text)})"
        )
    if not 0 < lat["min"] <= lat["p50"] <= lat["max"]:
        raise ToolOutputError(f"`onnxruntime_perf_test` printed inconsistent latencies {lat} (min <= P50 <= max)")
    out["requests"] = int(out["requests"])
    out.update({f"{k}_ms": round(v, 6) for k, v in lat.items()})
    return out


def parse_cpu_list(text: str) -> list[int]:
    """Kernel CPU list text (``0-3,6``) -> ``[0, 1, 2, 3, 6]``."""
    cores: list[int] = []
    body = text.strip()
    try:
        for part in body.split(","):
            if "-" in part:
                a, b = part.split("-")
                cores.extend(range(int(a), int(b) + 1))
            else:
                cores.append(int(part))
    except ValueError:
        raise ToolOutputError(f"not a CPU list: {_head(text)} (expected e.g. 0-7)") from None
    return cores


def affinity_mask(cores: list[int]) -> str:
    """The hexadecimal CPU mask ``taskset`` takes (cores 4-7 -> ``f0``)."""
    mask = 0
    for c in cores:
        mask |= 1 << int(c)
    return f"{mask:x}"


def parse_meminfo_gb(text: str) -> float:
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.M)
    if m is None:
        raise ToolOutputError(f"/proc/meminfo has no MemTotal line (output began {_head(text)})")
    return round(int(m.group(1)) * 1024 / 2**30, 1)
