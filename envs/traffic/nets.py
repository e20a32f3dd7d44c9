"""The SUMO networks sumo-rl ships (RESCO benchmark maps) and the parts of a net file we read ourselves."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

# name -> (folder under sumo_rl/nets/RESCO, net file, route file, begin time of the benchmark hour)
RESCO_NETS: dict[str, tuple[str, str, str, int]] = {
    "grid4x4": ("grid4x4", "grid4x4.net.xml", "grid4x4_1.rou.xml", 0),
    "arterial4x4": ("arterial4x4", "arterial4x4.net.xml", "arterial4x4_1.rou.xml", 0),
    "cologne1": ("cologne1", "cologne1.net.xml", "cologne1.rou.xml", 25200),
    "cologne3": ("cologne3", "cologne3.net.xml", "cologne3.rou.xml", 25200),
    "cologne8": ("cologne8", "cologne8.net.xml", "cologne8.rou.xml", 25200),
    "ingolstadt1": ("ingolstadt1", "ingolstadt1.net.xml", "ingolstadt1.rou.xml", 57600),
    "ingolstadt7": ("ingolstadt7", "ingolstadt7.net.xml", "ingolstadt7.rou.xml", 57600),
    "ingolstadt21": ("ingolstadt21", "ingolstadt21.net.xml", "ingolstadt21.rou.xml", 57600),
}


def sumo_rl_nets_dir() -> Path:
    """``site-packages/sumo_rl/nets`` located without importing sumo_rl (which needs SUMO_HOME)."""
    import importlib.util

    spec = importlib.util.find_spec("sumo_rl")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("sumo-rl is not installed: pip install 'inspo-control[traffic]'")
    return Path(next(iter(spec.submodule_search_locations))) / "nets"


def builtin_net(name: str) -> tuple[str, str, int]:
    """``(net_file, route_file, begin_time)`` of a shipped net."""
    if name not in RESCO_NETS:
        raise KeyError(
            f"unknown SUMO net {name!r}; known: {sorted(RESCO_NETS)} (or pass net_file= and route_file=)"
        )
    folder, net, route, begin = RESCO_NETS[name]
    root = sumo_rl_nets_dir() / "RESCO" / folder
    return str(root / net), str(root / route), begin


@dataclass(frozen=True)
class Program:
    """A traffic light's static program as written in the net file."""

    offset: float
    phases: tuple[tuple[float, str], ...]  # (duration s, state string)


def check_readable(path: str, kind: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SUMO {kind} file not found: {path}")
    if not os.access(p, os.R_OK):
        raise PermissionError(f"SUMO {kind} file not readable: {path}")
    if any(c.isspace() for c in str(p.resolve())):
        raise ValueError(f"SUMO {kind} file path contains whitespace (sumo-rl splits options on it): {path}")
    return p


def read_programs(net_file: str) -> dict[str, Program]:
    """The first static program of every traffic light; raises ``ValueError`` on a malformed net.

    Parsing it ourselves also guards libsumo, which crashes the whole process (SIGSEGV) on a
    malformed net file instead of raising.
    """
    programs: dict[str, Program] = {}
    try:
        context = ET.iterparse(net_file, events=("start", "end"))
        _, root = next(context)
        if root.tag != "net":
            raise ValueError(f"{net_file} is not a SUMO network: root element <{root.tag}>, expected <net>")
        for event, elem in context:
            if event == "end" and elem.tag == "tlLogic":
                tl_id = elem.get("id", "")
                if tl_id not in programs:
                    phases = tuple(
                        (float(p.get("duration", "0")), p.get("state", "")) for p in elem.iter("phase")
                    )
                    programs[tl_id] = Program(float(elem.get("offset", "0") or 0), phases)
                elem.clear()
    except ET.ParseError as err:
        raise ValueError(f"malformed SUMO network file {net_file}: {err}") from err
    except StopIteration as err:
        raise ValueError(f"empty SUMO network file {net_file}") from err
    return programs


def check_routes(route_file: str) -> None:
    """Raises ``ValueError`` unless the route file is well-formed XML with a <routes> root."""
    try:
        for _, elem in ET.iterparse(route_file, events=("start",)):
            if elem.tag != "routes":
                raise ValueError(
                    f"{route_file} is not a SUMO route file: root element <{elem.tag}>, expected <routes>"
                )
            break
        else:
            raise ValueError(f"empty SUMO route file {route_file}")
        for _ in ET.iterparse(route_file):
            pass
    except ET.ParseError as err:
        raise ValueError(f"malformed SUMO route file {route_file}: {err}") from err


def is_green(state: str) -> bool:
    """sumo-rl's rule for an agent-selectable phase: no yellow and not all red."""
    return "y" not in state and state.count("r") + state.count("s") != len(state)
