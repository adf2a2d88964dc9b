"""Entities from two sides compared: Hugging Face's token-classification pipeline (entity_group, word)
and bioray's inference (type, text)."""

from __future__ import annotations


def same_entities(pipeline_found: list[dict], bioray_found: list[dict]) -> bool:
    """The same spans and types, and scores within bioray's rounding (4 decimals)."""
    return [(e["start"], e["end"], e["entity_group"]) for e in pipeline_found] == [
        (e["start"], e["end"], e["type"]) for e in bioray_found] and all(
        abs(float(a["score"]) - b["score"]) < 1e-4 for a, b in zip(pipeline_found, bioray_found))
