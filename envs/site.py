"""A site as data: the site file a user writes, the resolved spec every log, run and model records,
and the check that a policy runs only on a site whose inputs and actions mean what they meant in training.

**Site file** (TOML, passed as ``--env site:PATH``; docs/elevator.md, docs/traffic.md, docs/games.md)::

    env = "elevator"          # a family or any env id: elevator, elevator:office16x6:uppeak, sumo:grid4x4, matrix
    name = "hq"               # the env id becomes site:hq (default: the file's stem)
    n_floors = 16             # every other key is an env option, the same names --env-arg takes
    [building]                # tables only group keys: [building] capacity = 13 is capacity = 13
    capacity = 13

**Resolved spec** (a JSON object): ``env_id``, ``family``, ``base`` (the env id the family built),
``options`` (every option with its value, defaults included) and ``files`` (sha256 of each file an
option points to). ``make_env(spec["base"], **spec["options"])`` rebuilds the same env.

**Check** (:func:`compare`): each family names its *structural* options, those that change what a
policy's observations or actions mean (floors, cars, capacity, speeds, the net file, the payoff
shape); a difference there is refused naming the field. Other differences (demand, episode length)
are allowed and reported in one line. Labels (``name``) and the simulator backend are ignored.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "site:"
SPEC_KEYS = ("env_id", "family", "base", "options", "files")


class SiteMismatchError(ValueError):
    """A policy asked to act on a site whose inputs or actions mean something else."""


@dataclass(frozen=True)
class SiteFile:
    path: Path
    name: str
    env: str  # the env id the family builds (e.g. "elevator" or "sumo:grid4x4")
    options: dict[str, Any]


def is_site_id(env_id: str) -> bool:
    return env_id.startswith(PREFIX)


def load_site_file(env_id_or_path: str) -> SiteFile:
    """Read ``site:PATH`` (or PATH): ``env`` and ``name`` keys, every other key an option."""
    path = Path(env_id_or_path.removeprefix(PREFIX))
    if not path.is_file():
        raise FileNotFoundError(
            f"site file not found: {path} (--env site:PATH names a TOML site file; docs/elevator.md)"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid TOML site file: {err}") from None
    env = data.pop("env", None)
    if not isinstance(env, str) or not env or is_site_id(env):
        raise ValueError(f'{path}: a site file needs env = "<family or env id>", e.g. env = "elevator"')
    name = data.pop("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path}: name must be a non-empty string, got {name!r}")
    options: dict[str, Any] = {}
    for key, value in data.items():
        group = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in group:
            if k in options:
                raise ValueError(f"{path}: option {k} is given twice")
            options[k] = v
    return SiteFile(path, name, env, options)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def family_module(family: str):
    from envs.registry import family_named

    return family_named(family).module


def dumps(spec: dict[str, Any]) -> str:
    """Canonical JSON of a spec (sorted keys): what log metadata and run directories store."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"not JSON-serialisable in a site spec: {value!r}")


def normalized(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as it reads back from JSON (tuples -> lists), so stored and fresh specs compare equal."""
    return json.loads(dumps(spec))


def parse_spec(text: str | bytes, where: str) -> dict[str, Any]:
    """A stored spec, checked for its keys; ``ValueError`` naming ``where`` otherwise."""
    try:
        spec = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{where}: site_spec is not JSON: {err}") from None
    if not isinstance(spec, dict) or not all(k in spec for k in SPEC_KEYS):
        raise ValueError(f"{where}: site_spec must be a JSON object with keys {list(SPEC_KEYS)}")
    return spec


def env_from_spec(spec: dict[str, Any], **overrides):
    """The env a resolved spec describes, ``overrides`` changing single options (the files it names must
    still hold what they held)."""
    from envs.registry import make_env

    env = make_env(spec["base"], **{**spec["options"], **overrides})
    rebuilt = env.site_spec
    changed = sorted(
        k for k in spec["files"] if k not in overrides and rebuilt["files"].get(k) != spec["files"][k]
    )
    if changed:
        raise SiteMismatchError(f"site mismatch: {', '.join(changed)} changed since the spec was recorded")
    env.env_id = spec["env_id"]
    env.site_spec = normalized({**rebuilt, "env_id": spec["env_id"]})
    return env


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:  # a sha256
        return value[:12]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):  # demand bins
        return f"[{len(value)} bin(s) #{hashlib.sha256(dumps(value).encode()).hexdigest()[:8]}]"
    text = json.dumps(value, default=_jsonable)
    return text if len(text) <= 40 else text[:37] + "..."


def compare(
    policy: dict[str, Any], env: dict[str, Any], left: str = "policy", right: str = "env"
) -> str | None:
    """Refuse (``SiteMismatchError``) a structural difference; return a one-line note on other ones.
    ``left``/``right`` name the two sides in messages (``capacity 13 (policy) vs 20 (env)``)."""
    if policy["family"] != env["family"]:
        raise SiteMismatchError(
            f"site mismatch: family {policy['family']} ({left}) vs {env['family']} ({right})"
        )
    module = family_module(policy["family"])
    structural: tuple[str, ...] = module.STRUCTURAL_OPTIONS
    ignored: tuple[str, ...] = getattr(module, "IGNORED_OPTIONS", ())
    structural_files: tuple[str, ...] = getattr(module, "STRUCTURAL_FILES", ())
    p_opts, e_opts = normalized(policy["options"]), normalized(env["options"])
    for key in structural:
        if p_opts.get(key) != e_opts.get(key):
            raise SiteMismatchError(
                f"site mismatch: {key} {_short(p_opts.get(key))} ({left}) vs {_short(e_opts.get(key))} ({right})"
            )
    for key in structural_files:
        p, e = policy["files"].get(key), env["files"].get(key)
        if p != e:
            raise SiteMismatchError(
                f"site mismatch: {key} sha256 {_short(p)} ({left}) vs {_short(e)} ({right}): another network"
            )
    differ = [
        f"{key} {_short(p_opts.get(key))} -> {_short(e_opts.get(key))}"
        for key in sorted(set(p_opts) | set(e_opts))
        if key not in structural and key not in ignored and p_opts.get(key) != e_opts.get(key)
    ]
    differ += [
        f"{key} sha256 {_short(policy['files'].get(key))} -> {_short(env['files'].get(key))}"
        for key in sorted(set(policy["files"]) | set(env["files"]))
        if key not in structural_files and policy["files"].get(key) != env["files"].get(key)
    ]
    if not differ:
        return None
    return (
        f"note: same site structure as the {left}'s, other demand/episode options ({left} -> {right}): "
        + ("; ".join(differ))
    )


def check_policy_site(policy_spec: dict | None, env, who: str, left: str = "policy") -> str | None:
    """:func:`compare` for a recorded spec and a live env; None when either has no spec."""
    env_spec = getattr(env, "site_spec", None)
    if not policy_spec or not env_spec:
        return None
    try:
        return compare(policy_spec, env_spec, left=left)
    except SiteMismatchError as err:
        raise SiteMismatchError(f"{who}: {err}") from None


def partition_env_id(env_id: str) -> str:
    """The env id a log's rows are filed under: ``site:<name>`` for a site file, else the id itself."""
    return f"{PREFIX}{load_site_file(env_id).name}" if is_site_id(env_id) else env_id


def summary_rows(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, value) rows for the dataset card: family, every option and file hash (structural ones marked *)."""
    module = family_module(spec["family"])
    structural = set(module.STRUCTURAL_OPTIONS)
    rows = [("family", spec["family"]), ("built as", spec["base"])]
    for key, value in sorted(spec["options"].items()):
        if key == "demand" and isinstance(value, list):
            text = f"{len(value)} bin(s): " + "; ".join(
                f"{b['seconds']:g} s pct5 {b['pct5']:g} up/down/inter {b['up']:g}/{b['down']:g}/{b['inter']:g}"
                for b in value[:3]
            )
            rows.append((key, text + (" ..." if len(value) > 3 else "")))
        else:
            rows.append((key + (" *" if key in structural else ""), json.dumps(value, default=_jsonable)))
    structural_files = set(getattr(module, "STRUCTURAL_FILES", ()))
    rows += [
        (f"{key} sha256" + (" *" if key in structural_files else ""), digest)
        for key, digest in sorted(spec["files"].items())
    ]
    return rows


def to_toml(spec: dict[str, Any]) -> str:
    """A site file that rebuilds ``spec`` (``python -m envs.site ENV_ID`` prints one to start from)."""
    lines = [f"env = {json.dumps(spec['base'])}", f"name = {json.dumps(spec['env_id'].replace(':', '-'))}"]
    tables = []
    for key, value in sorted(normalized(spec["options"]).items()):
        if key == "name":  # the top-level name is the site's
            continue
        if value is None:
            lines.append(f"# {key} is unset (the default)")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for row in value:
                tables.append(f"\n[[{key}]]")
                tables += [f"{k} = {json.dumps(v)}" for k, v in row.items()]
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines + tables) + "\n"


if __name__ == "__main__":  # pragma: no cover - a helper for writing site files
    import sys

    from envs.registry import make_env

    if len(sys.argv) != 2:
        sys.exit("usage: python -m envs.site ENV_ID   (prints a site file of that env's resolved options)")
    print(to_toml(make_env(sys.argv[1]).site_spec), end="")
