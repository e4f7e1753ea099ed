"""What a phone is and what state it is in: recorded with every result row.

One shell round trip gathers the static facts (model, SoC, ABI, Android, RAM, CPU cores,
max frequencies, governors) and the changing ones (battery, thermal zones); `state()` reads
only the changing ones, at the start and end of every case.
"""

from __future__ import annotations

import re
from typing import Any

from .adb import Transport

PROPS = ("ro.product.model", "ro.product.manufacturer", "ro.product.device", "ro.soc.model",
         "ro.soc.manufacturer", "ro.board.platform", "ro.hardware", "ro.product.cpu.abi",
         "ro.product.cpu.abilist", "ro.build.version.release", "ro.build.version.sdk",
         "ro.build.fingerprint", "ro.build.type", "ro.serialno")

_STATE_SCRIPT = r"""
echo '@battery'; dumpsys battery 2>/dev/null
echo '@thermal'
for z in /sys/class/thermal/thermal_zone*; do
  [ -r "$z/temp" ] || continue
  echo "${z##*/} $(cat "$z/type" 2>/dev/null | tr ' ' _) $(cat "$z/temp" 2>/dev/null)"
done
"""

_STATIC_SCRIPT = "\n".join(f"echo '@prop {p}'; getprop {p}" for p in PROPS) + r"""
echo '@meminfo'; cat /proc/meminfo 2>/dev/null | head -3
echo '@cpus'
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  [ -d "$c" ] || continue
  echo "${c##*/} $(cat "$c/cpufreq/cpuinfo_max_freq" 2>/dev/null || echo -) $(cat "$c/cpufreq/scaling_governor" 2>/dev/null || echo -)"
done
echo '@nproc'; grep -c '^processor' /proc/cpuinfo 2>/dev/null
echo '@id'; id -u
echo '@tools'; for t in sha256sum tar base64 taskset setsid; do command -v $t >/dev/null 2>&1 && echo $t; done
""" + _STATE_SCRIPT


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = line[1:].strip()
            out.setdefault(current, [])
        elif current is not None:
            out[current].append(line)
    return out


def parse_battery(lines: list[str]) -> dict[str, Any]:
    """`dumpsys battery`: level %, temperature (tenths of a degree C), charging."""
    values = {}
    for line in lines:
        key, sep, value = line.strip().partition(":")
        if sep:
            values[key.strip()] = value.strip()
    if not values:
        return {}
    plugged = [k.split()[0].lower() for k in ("AC powered", "USB powered", "Wireless powered")
               if values.get(k) == "true"]
    temp = values.get("temperature")
    return {
        "level": int(values["level"]) if values.get("level", "").isdigit() else None,
        "temperature_c": int(temp) / 10 if temp and temp.lstrip("-").isdigit() else None,
        "charging": values.get("status") == "2" or bool(plugged) and values.get("status") != "3",
        "plugged": plugged[0] if plugged else None,
    }


def parse_thermal(lines: list[str]) -> dict[str, float]:
    """zone lines "thermal_zoneN TYPE MILLIDEGREES" -> {"TYPE": degrees C} (zone name if no type)."""
    zones: dict[str, float] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[2].lstrip("-").isdigit():
            raw = int(parts[2])
            zones[parts[1] if parts[1] != "" else parts[0]] = raw / 1000 if abs(raw) > 200 else float(raw)
    return zones


def parse_state(text: str) -> dict[str, Any]:
    s = _sections(text)
    return {"battery": parse_battery(s.get("battery", [])), "thermal_c": parse_thermal(s.get("thermal", []))}


def parse_facts(serial: str, text: str) -> dict[str, Any]:
    s = _sections(text)
    props = {key.split(" ", 1)[1]: (lines[0].strip() if lines else "") for key, lines in s.items()
             if key.startswith("prop ")}
    mem_kb = None
    for line in s.get("meminfo", []):
        m = re.match(r"MemTotal:\s+(\d+)", line)
        if m:
            mem_kb = int(m.group(1))
    cpus = []
    for line in s.get("cpus", []):
        parts = line.split()
        if len(parts) == 3:
            cpus.append({"cpu": parts[0], "max_khz": int(parts[1]) if parts[1].isdigit() else None,
                         "governor": None if parts[2] == "-" else parts[2]})
    nproc = s.get("nproc", ["0"])
    cores = len(cpus) or (int(nproc[0]) if nproc and nproc[0].strip().isdigit() else None)
    governors = sorted({c["governor"] for c in cpus if c["governor"]})
    uid = (s.get("id") or ["?"])[0].strip()
    return {
        "name": serial,
        "kind": "android",
        "serial": serial,
        "model": props.get("ro.product.model"),
        "manufacturer": props.get("ro.product.manufacturer"),
        "device": props.get("ro.product.device"),
        "soc": props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware"),
        "soc_manufacturer": props.get("ro.soc.manufacturer") or None,
        "board_platform": props.get("ro.board.platform"),
        "abi": props.get("ro.product.cpu.abi"),
        "abilist": props.get("ro.product.cpu.abilist"),
        "android_release": props.get("ro.build.version.release"),
        "sdk": int(props["ro.build.version.sdk"]) if props.get("ro.build.version.sdk", "").isdigit() else None,
        "build_fingerprint": props.get("ro.build.fingerprint"),
        "build_type": props.get("ro.build.type"),
        "ram_gb": round(mem_kb / 2**20, 1) if mem_kb else None,
        "cpu_cores": cores,
        "cpu_max_khz": [c["max_khz"] for c in cpus] or None,
        "governors": governors or None,
        "root": uid == "0",
        "tools": s.get("tools", []),
        **parse_state(text),
    }


def device_facts(transport: Transport) -> dict[str, Any]:
    """Static facts plus the current battery and thermal state of the phone."""
    return parse_facts(transport.serial, transport.run(_STATIC_SCRIPT, timeout=60, what="reading device facts"))


def device_state(transport: Transport) -> dict[str, Any]:
    """Battery and thermal zones now."""
    return parse_state(transport.run(_STATE_SCRIPT, timeout=30, what="reading battery and thermal state"))
