"""Named option sets (`preset=avatar`), read once from THUMBIFY_PRESETS_FILE (YAML or JSON) and checked at start.

The file maps each name to spec options, written as in a JSON options body (a value, or a list for `sizes`):

    avatar: {sizes: [64, 128], fit: cover, format: webp, quality: 70}

A job's `preset` expands to those options; a key that is not presets-only may add or override any of them. A
presets-only key may send `preset` and no other spec option: the variants it can make are the presets' only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from thumbify.errors import InvalidOptions, invalid_options
from thumbify.spec import PRESET_NAME, ThumbnailSpec

NAME_RE = re.compile(PRESET_NAME)
PRESET = "preset"
# What a preset may set: every spec option but `preset` itself.
PRESET_OPTIONS = tuple(name for name in ThumbnailSpec.model_fields if name != PRESET)

if TYPE_CHECKING:
    from thumbify.settings import Settings

Options = dict[str, list[str]]


def _as_values(name: str, option: str, given: object) -> list[str]:
    """A YAML/JSON value (a scalar or a list of them) as the form's list of strings; booleans as `true`/`false`."""
    values = given if isinstance(given, list) else [given]
    out = []
    for value in values:
        if isinstance(value, bool):
            out.append("true" if value else "false")
        elif isinstance(value, str | int | float):
            out.append(str(value))
        else:
            raise ValueError(f"preset {name!r}: {option}: must be a string, a number or a boolean, or a list of them")
    return out


@dataclass(frozen=True)
class Presets:
    """The presets by name, each as the options it expands to (checked: each makes a valid spec)."""

    items: dict[str, Options] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: object, origin: str) -> Presets:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"{origin}: expected a mapping of preset names to options")
        items: dict[str, Options] = {}
        for name, options in data.items():
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise ValueError(f"{origin}: preset name {name!r} must match {NAME_RE.pattern}")
            if not isinstance(options, Mapping) or not options:
                raise ValueError(f"{origin}: preset {name!r}: expected a mapping of options")
            unknown = sorted(set(map(str, options)) - set(PRESET_OPTIONS))
            if unknown:
                raise ValueError(
                    f"{origin}: preset {name!r}: unknown option(s) {', '.join(unknown)}; known: "
                    + ", ".join(PRESET_OPTIONS)
                )
            expanded = {str(option): _as_values(name, str(option), value) for option, value in options.items()}
            try:
                ThumbnailSpec.from_options(expanded)
            except InvalidOptions as exc:
                raise ValueError(f"{origin}: preset {name!r}: {exc}") from None
            items[name] = expanded
        return cls(items)

    @classmethod
    def load(cls, path: Path | None) -> Presets:
        """The presets in `path` (`.yaml`/`.yml` read as YAML, anything else as JSON); none without a path.
        ValueError, naming the file, the preset and the field, for anything wrong."""
        if path is None:
            return cls()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"presets file {path}: {exc.strerror or exc}") from None
        try:
            data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
        except (yaml.YAMLError, ValueError) as exc:
            raise ValueError(f"presets file {path} does not parse: {exc}") from None
        return cls.parse(data, f"presets file {path}")

    @classmethod
    def for_settings(cls, settings: Settings) -> Presets:
        """The presets the settings name; SystemExit saying what is wrong, so a bad file stops the server."""
        try:
            return cls.load(settings.presets_file)
        except ValueError as exc:
            raise SystemExit(f"refusing to start: {exc}") from None

    def expand(self, options: Options, presets_only: bool = False) -> Options:
        """`options` with `preset` replaced by its options (the explicit ones win) and its name kept; 422 naming
        `preset` for an unknown name, and, for a presets-only key, for no preset or any other spec option."""
        given = options.get(PRESET)
        if presets_only:
            extra = sorted(set(options) & set(PRESET_OPTIONS))
            if not given or extra:
                why = "this API key may only use presets: send `preset` alone"
                fields = extra or [PRESET]
                raise invalid_options([{"field": name, "message": why} for name in fields])
        if given is None:
            return options
        if len(given) != 1:
            raise invalid_options([{"field": PRESET, "message": "give it once"}])
        name = given[0].strip()
        if name not in self.items:
            known = ", ".join(sorted(self.items)) or "none configured"
            raise invalid_options([{"field": PRESET, "message": f"no preset {name!r}; known: {known}"}])
        return {**self.items[name], **options, PRESET: [name]}
