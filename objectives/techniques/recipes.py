"""A layer's policy as an ai-edge-quantizer recipe, and back (the post-training methods ``ptq`` and ``mixed``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litesweep.objectives.policy import FLOAT16_BITS, FLOAT_BITS, LayerPolicy

if TYPE_CHECKING:  # ptq loads ai-edge-quantizer: imported where a post-training trial needs it
    from litesweep.objectives.techniques.ptq import PtqLayerRecipe


def recipe_fields(recipe: PtqLayerRecipe) -> tuple[int, str, int]:
    """(weight bits, mode, activation bits) of a recipe, as ``policy.recipe_name`` takes them."""
    if recipe.mode == "float":
        return FLOAT_BITS, "dynamic", 8
    if recipe.mode == "fp16":
        return FLOAT16_BITS, "dynamic", 8
    return recipe.bits, recipe.mode, recipe.act_bits


def ptq_recipe(layer: LayerPolicy) -> PtqLayerRecipe:
    """The recipe that applies ``layer``'s post-training settings."""
    from litesweep.objectives.techniques import ptq

    if layer.bits == FLOAT_BITS:
        return ptq.PtqLayerRecipe(mode="float")
    if layer.bits == FLOAT16_BITS:
        return ptq.PtqLayerRecipe(mode="fp16")
    return ptq.PtqLayerRecipe(mode=layer.ptq_mode, bits=layer.bits, act_bits=layer.act_bits)
