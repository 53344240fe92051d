"""`GET /v1/presets`: the named option sets a job may ask for with `preset=NAME` (thumbify/presets.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from api.auth import Client
from api.problems import AUTH_PROBLEMS, problem_responses
from api.services import Services, services
from thumbify.presets import Presets
from thumbify.spec import ThumbnailSpec
from thumbify.views import PresetList, PresetOptionsView, PresetView, spec_fields

router = APIRouter(tags=["presets"])
Svc = Annotated[Services, Depends(services)]


def preset_list(presets: Presets) -> PresetList:
    """Each preset with every option it makes, defaults filled in; `format=auto` stays `auto` (each job's Accept
    header decides), with the effort it names, if any."""
    items = []
    for name, options in sorted(presets.items.items()):
        spec, negotiated = ThumbnailSpec.from_options(options)
        fields = spec_fields(spec) | {"preset": name}
        if negotiated:
            fields |= {"format": "auto", "effort": int(options["effort"][0]) if "effort" in options else None}
        items.append(PresetView(name=name, options=PresetOptionsView.model_validate(fields)))
    return PresetList(items=items)


@router.get(
    "/v1/presets",
    summary="The presets a job may name (`preset=NAME`)",
    description="Every named option set of the server's presets file (`THUMBIFY_PRESETS_FILE`), with each option "
    "it sets, defaults filled in. Options sent beside `preset` override its own, except from a presets-only key. "
    "Any key with scope `submit` or `read` may list them.",
    responses=problem_responses(
        *AUTH_PROBLEMS, 503, descriptions={403: "The key has neither the `submit` nor the `read` scope"}
    ),
)
async def list_presets(svc: Svc, caller: Client) -> PresetList:
    return preset_list(svc.presets)
