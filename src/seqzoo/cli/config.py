"""Route ``key=value`` overrides of ``seqzoo train`` to model args, task args or TrainConfig, and validate.

A key is looked up in the three namespaces by name; a key found in more than one must be prefixed
(``model.``, ``task.``, ``train.``). Values are JSON literals where they parse (``64``, ``1e-3``,
``true``, ``null``, ``[1, 2]``), else plain strings. Everything is checked here, before any training:
an unknown key names the closest valid key of any namespace, and bad values fail when the task, the
TrainConfig and the model are built once.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seqzoo.errors import ConfigError
from seqzoo.registry_utils import closest, signature_params

if TYPE_CHECKING:  # the CLI starts without torch; the training tier loads when a run is resolved
    from seqzoo.training.run_config import RunConfig

NAMESPACES = ("model", "task", "train")


@dataclass
class Assignment:
    namespace: str | None
    key: str
    value: Any
    raw: str


@dataclass
class ResolvedConfig:
    """What ``seqzoo train`` will run: the resolved run (``RunConfig``, exactly the trainer's ``config.json``), the
    seeds, and the user's overrides per namespace."""

    run: RunConfig
    seeds: list[int]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.run.model

    @property
    def task(self) -> str:
        return self.run.task

    def for_seed(self, seed: int) -> RunConfig:
        return self.run.with_seed(seed)

    def to_dict(self) -> dict[str, Any]:
        d = self.run.to_dict()
        d["train"].pop("seed", None)
        return {**d, "seeds": self.seeds, "overrides": self.overrides}


def parse_value(raw: str) -> Any:
    """A JSON literal when ``raw`` parses as one (also Python's True/False/None), else the string itself."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    return {"True": True, "False": False, "None": None}.get(raw, raw)


def parse_assignments(items: list[str]) -> list[Assignment]:
    """``["seq_len=50", "model.d_model=64"]`` -> assignments (a missing ``=`` is an error)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r} (e.g. seq_len=50 or train.lr=1e-3)")
        key, raw = item.split("=", 1)
        key = key.strip()
        ns = None
        if "." in key:
            prefix, rest = key.split(".", 1)
            if prefix not in NAMESPACES:
                hint = closest(prefix, NAMESPACES)
                raise ConfigError(f"unknown prefix {prefix!r} in {key!r}; use one of model., task., train."
                                  + (f" (did you mean '{hint}.{rest}'?)" if hint else ""))
            ns, key = prefix, rest
        if not key:
            raise ConfigError(f"empty key in {item!r}")
        out.append(Assignment(ns, key, parse_value(raw), raw))
    return out


def _train_fields() -> list[str]:
    from seqzoo.training import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig)]


def namespace_keys(model: str, task: str) -> dict[str, list[str]]:
    """The valid keys of each namespace for this model preset and task (unknown names raise)."""
    from seqzoo.models.registry import MODELS
    from seqzoo.tasks.registry import TASKS

    entry = MODELS.get(model)
    task_cls = TASKS.get(task)
    return {"model": entry.valid_args(), "task": signature_params(task_cls.__init__), "train": _train_fields()}


def route(assignments: list[Assignment], keys: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Split assignments into the three namespaces; unknown or ambiguous keys raise ConfigError."""
    routed: dict[str, dict[str, Any]] = {ns: {} for ns in NAMESPACES}
    for a in assignments:
        if a.namespace is not None:
            if a.key not in keys[a.namespace]:
                hint = closest(a.key, keys[a.namespace])
                raise ConfigError(f"unknown {a.namespace} key {a.key!r}"
                                  + (f"; did you mean '{a.namespace}.{hint}'?" if hint else "")
                                  + f" Valid {a.namespace} keys: {', '.join(sorted(keys[a.namespace]))}")
            ns = a.namespace
        else:
            owners = [ns for ns in NAMESPACES if a.key in keys[ns]]
            if not owners:
                raise ConfigError(_unknown_key(a.key, keys))
            if len(owners) > 1:
                raise ConfigError(f"key {a.key!r} is ambiguous: it is a {' and a '.join(owners)} key; write "
                                  + " or ".join(f"{ns}.{a.key}={a.raw}" for ns in owners))
            ns = owners[0]
        if a.key in routed[ns]:
            raise ConfigError(f"{ns} key {a.key!r} is given twice")
        routed[ns][a.key] = a.value
    return routed


def _unknown_key(key: str, keys: dict[str, list[str]]) -> str:
    pool = {k: ns for ns in reversed(NAMESPACES) for k in keys[ns]}
    hint = closest(key, list(pool))
    msg = f"unknown key {key!r}"
    if hint is not None:
        msg += f"; did you mean {hint!r} ({pool[hint]})?"
    valid = "; ".join(f"{ns}: {', '.join(sorted(keys[ns]))}" for ns in NAMESPACES)
    return msg + f" Valid keys — {valid}"


def resolve_config(model: str, task: str, assignments: list[Assignment], seeds: list[int] | None = None,
                   data_dir: str | None = None) -> ResolvedConfig:
    """Route the overrides, then resolve and check the run with the trainer's own rule (``resolve_run``): the
    task, the model on one training batch and the data, so every error ``train`` would hit before work starts
    is raised here too."""
    from seqzoo.training.run_config import resolve_run

    keys = namespace_keys(model, task)
    routed = route(assignments, keys)
    train_args = routed["train"]
    if seeds is not None and "seed" in train_args:
        raise ConfigError("give the seed either as --seeds or as seed=..., not both")
    seed_list = list(seeds) if seeds else [train_args.pop("seed", 0)]  # TrainConfig checks the type
    train_args.pop("seed", None)
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"--seeds has duplicates: {seed_list}")
    resolved = resolve_run(model, task, model_args=routed["model"], task_args=routed["task"],
                           config={**train_args, "seed": seed_list[0]}, data_dir=data_dir)
    return ResolvedConfig(resolved.config, seed_list, routed)
