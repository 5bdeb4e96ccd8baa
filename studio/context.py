"""State shared by the studio's tabs, and the form <-> RunConfig mapping.

The run being edited is the form itself: every widget that edits a RunConfig
field is registered under that field's dotted path ("lora.r",
"training.learning_rate"), the path the config, its YAML and `--set` already
use, so a widget is named once. `StudioContext.config_from(values)` turns the
form's values into a validated RunConfig; the same pure functions
(`config_from_form`, `form_value`) are unit tested without a browser.

Cross-tab state lives here too: the run shown in the Train monitor (a
per-session gr.State, mirrored to a gr.BrowserState so a reload reselects it)
and the recommended overrides applied for the current model.

What it does not know: whether a model, dataset or run exists; the engine
checks those and raises errors that the tabs turn into gr.Error.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr
import yaml
from pydantic import BaseModel

from tunesmith.engine.config import RunConfig, field_help
from tunesmith.engine.errors import TunesmithError
from tunesmith.engine.text import one_line

from .confine import Confinement

from .i18n import FIELD_LABELS, T, plain

# ---------------------------------------------------------------------------
# Pure form <-> config mapping
# ---------------------------------------------------------------------------


def _field_info(path: str):
    model: type[BaseModel] = RunConfig
    parts = path.split(".")
    for part in parts[:-1]:
        model = model.model_fields[part].annotation  # sections are BaseModel subclasses
    return model.model_fields[parts[-1]]


def _allows_none(path: str) -> bool:
    ann = _field_info(path).annotation
    return type(None) in typing.get_args(ann)


def _is_int(path: str) -> bool:
    ann = _field_info(path).annotation
    return ann is int or int in typing.get_args(ann) and float not in typing.get_args(ann)


def _is_float(path: str) -> bool:
    ann = _field_info(path).annotation
    return ann is float or float in typing.get_args(ann)


def default_value(path: str) -> Any:
    """The RunConfig default for a dotted path."""
    node: Any = RunConfig()
    for part in path.split("."):
        node = getattr(node, part)
    return node.model_dump(mode="json") if isinstance(node, BaseModel) else node


def to_config_value(path: str, value: Any) -> Any:
    """A widget's value as the config field expects it.

    Empty text means "not set" for optional fields, and 0 in an optional count
    (max steps, max samples, eval steps) means "not set" too: the widgets say so.
    gr.Number gives floats; integer fields get ints.
    """
    if isinstance(value, str):
        value = value.strip()
    if _allows_none(path) and (value is None or value == "" or (_is_int(path) and value == 0)):
        return None
    if _is_int(path) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def form_value(path: str, value: Any) -> Any:
    """A config value as its widget shows it (the inverse of `to_config_value`)."""
    if value is None:
        if _is_float(path):
            return None  # a gr.Number shows None as empty; "" would fail its preprocessing
        return 0 if _is_int(path) else ""
    if isinstance(value, dict) and path != "objective_settings":  # training.extra: its box holds YAML text
        # (objective_settings lives in a gr.State that the objective's own widgets read as a mapping)
        return yaml.safe_dump(value, sort_keys=False) if value else ""
    if isinstance(value, list) and path == "resources.gpus":
        return "[" + ", ".join(str(v) for v in value) + "]"  # "[1]" is GPU 1; "1" would be a count
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if path != "data.datasets" else value
    return value


def config_from_form(values: dict[str, Any], extra: dict[str, Any] | None = None) -> RunConfig:
    """Build a validated RunConfig from {dotted path: widget value}.

    `extra` holds {dotted path: config value} for fields that have no widget
    (recommended overrides such as training.logging_steps). Raises ConfigError
    naming the field.
    """
    data = RunConfig().model_dump(mode="json")
    items = [(p, v) for p, v in (extra or {}).items()] + [(p, to_config_value(p, v)) for p, v in values.items()]
    for path, value in items:
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return RunConfig.from_dict(data, source="form")


def override_updates(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Config values to set when the model changes from one with `old` recommended
    overrides to one with `new`: new values win, and fields only the old model
    overrode go back to their defaults (switching away from the demo model must not
    leave its tiny settings behind)."""
    out = {path: default_value(path) for path in old if path not in new}
    out.update(new)
    return out


def config_values(cfg: RunConfig, paths: list[str]) -> dict[str, Any]:
    """{path: widget value} for `paths`, read from `cfg`."""
    out = {}
    for path in paths:
        node: Any = cfg
        for part in path.split("."):
            node = getattr(node, part)
        if path == "objective_settings":
            # every setting of the run's objective, defaults included: the Train tab's settings
            # widgets follow this state (train_tab.build_objective_section), and two objectives'
            # full settings always differ, so loading another run's settings always redraws them
            from tunesmith.engine.objectives import parse_settings

            s = parse_settings(cfg.objective, node)
            node = s.model_dump(mode="json", exclude_none=True) if s is not None else {}
        out[path] = form_value(path, node)
    return out


# ---------------------------------------------------------------------------
# Engine errors -> gr.Error
# ---------------------------------------------------------------------------


def _user_message(e: Exception) -> str:
    """One line: the engine's message, or what the machine refused (a full disk, a permission)."""
    if isinstance(e, OSError):
        from pathlib import Path

        from tunesmith.engine.diskspace import disk_full_reason

        return one_line(disk_full_reason(e, Path(e.filename or ".")) or f"{e.strerror or e}: {e.filename or ''}")
    return one_line(str(e))


def user_errors(fn: Callable) -> Callable:
    """Show the engine's typed errors as a gr.Error toast with its message.

    Anything else is a bug: Gradio shows a generic "Error" and the traceback
    goes to the studio's terminal, never to the browser. Keeps generator
    handlers generators (Gradio streams only those).
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except (TunesmithError, OSError) as e:
                raise gr.Error(plain(_user_message(e)), print_exception=False) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except (TunesmithError, OSError) as e:
            raise gr.Error(plain(_user_message(e)), print_exception=False) from None

    return wrapper


# ---------------------------------------------------------------------------
# The context object
# ---------------------------------------------------------------------------


@dataclass
class StudioContext:
    """What the tab builders share. Create inside a `gr.Blocks` context.

    initial: the config the form starts from (defaults + the default model's
        recommended overrides).
    fields: dotted RunConfig path -> the widget that edits it.
    run_id: the run shown in the Train monitor for this session; anything that
        sets it (Start, Runs -> Open, page load) makes the monitor show that run.
    saved_run_id: the same id kept in the browser, so a reload reselects it.
    applied_overrides: {path: value} recommended for the current model; those
        without a widget (e.g. training.logging_steps) still go into the config.
    confine: the folders paths from the browser may name (confine.py);
        `config_from` checks every config against it.
    """

    demo: gr.Blocks
    initial: RunConfig
    run_id: gr.State
    saved_run_id: gr.BrowserState
    applied_overrides: gr.State
    tabs: gr.Tabs | None = None
    confine: Confinement = field(default_factory=Confinement)
    fields: dict[str, gr.components.Component] = field(default_factory=dict)

    @classmethod
    def create(cls, demo: gr.Blocks, initial: RunConfig, overrides: dict[str, Any],
               confine: Confinement | None = None) -> "StudioContext":
        return cls(
            demo=demo,
            initial=initial,
            run_id=gr.State(None),
            saved_run_id=gr.BrowserState(None, storage_key="tunesmith-run"),
            applied_overrides=gr.State(dict(overrides)),
            confine=confine or Confinement(),
        )

    @property
    def allowed_roots(self) -> list:
        """Folders the Data tab may read dataset files from."""
        return self.confine.data_roots()

    def field(self, path: str, widget: type, *args: Any, **kwargs: Any):
        """Create and register the widget for config field `path`.

        Its value starts at the initial config's value and its info line is the
        field's help text, unless given.
        """
        kwargs.setdefault("value", config_values(self.initial, [path])[path])
        kwargs.setdefault("info", T(field_help(path)))
        FIELD_LABELS[path] = getattr(kwargs.get("label"), "key", kwargs.get("label")) or path  # for plain()
        comp = widget(*args, **kwargs)
        self.fields[path] = comp
        return comp

    def config_inputs(self) -> set:
        """Inputs for a handler that needs the config: every field widget plus the
        applied overrides. The handler receives one dict {component: value}; pass
        it to `config_from`."""
        return set(self.fields.values()) | {self.applied_overrides}

    def config_from(self, values: dict) -> RunConfig:
        by_comp = {comp: path for path, comp in self.fields.items()}
        form = {by_comp[c]: v for c, v in values.items() if c in by_comp}
        # All overrides go in first, widget values on top: a widget the browser has not
        # rendered yet (inside a closed accordion) sends no value, and its field must then
        # keep the recommended setting rather than fall back to the schema default.
        extra = dict(values.get(self.applied_overrides) or {})
        # Every handler that builds a config from the form (Start, Check data, Show YAML)
        # gets one whose paths the studio may use.
        return self.confine.check_config(config_from_form(form, extra))

