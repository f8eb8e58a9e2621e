"""Vocabularies and question forms of Medical-Diff-VQA (v1.0.1).

The words and templates the benchmark's generator uses to build its questions and answers, as described
in shared/design/BENCHMARK.md. The synthetic generator draws from them, the local tokenizer is trained
on a corpus built from them, and the app offers the seven question families from them.
"""

from __future__ import annotations

QUESTION_TYPES: tuple[str, ...] = (
    "abnormality",
    "presence",
    "view",
    "location",
    "level",
    "type",
    "difference",
)

# The 30 official finding names.
FINDINGS: tuple[str, ...] = (
    "pleural effusion",
    "atelectasis",
    "cardiomegaly",
    "enlargement of the cardiac silhouette",
    "edema",
    "hernia",
    "vascular congestion",
    "hilar congestion",
    "pneumothorax",
    "heart failure",
    "lung opacity",
    "pneumonia",
    "tortuosity of the descending aorta",
    "scoliosis",
    "gastric distention",
    "hypoxemia",
    "hypertensive heart disease",
    "hematoma",
    "tortuosity of the thoracic aorta",
    "contusion",
    "emphysema",
    "granuloma",
    "calcification",
    "pleural thickening",
    "thymoma",
    "blunting of the costophrenic angle",
    "consolidation",
    "fracture",
    "pneumomediastinum",
    "air collection",
)

LOCATION_WORDS: tuple[str, ...] = (
    "left", "right", "bilateral", "upper", "middle", "lower", "apical", "basilar", "bibasilar",
    "basal", "retrocardiac", "pericardial", "apicolateral", "mid to lower", "lung", "lobe", "base",
    "pleural", "rib",
)

LEVEL_WORDS: tuple[str, ...] = (
    "minimal", "subtle", "small", "mild", "mildly", "moderate", "moderately", "mild to moderate",
    "moderate to large", "moderate to severe", "severe", "massive", "acute", "increasing",
    "decreasing", "minor",
)

TYPE_WORDS: tuple[str, ...] = (
    "interstitial", "layering", "dense", "parenchymal", "compressive", "obstructive", "linear",
    "plate-like", "patchy", "ground-glass", "calcified", "scattered", "focal", "multifocal",
)

VIEWS: tuple[str, ...] = ("PA", "AP")

# Question forms per family; {finding}, {location}, {post_location} and {region} are filled in.
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "abnormality": (
        "what abnormalities are seen in this image?",
        "what abnormalities are seen in the {post_location}?",
        "is there evidence of any abnormalities in this image?",
    ),
    "presence": (
        "is there evidence of {finding} in this image?",
        "is there {finding}?",
        "is there {finding} in the {location} area?",
        "is the {finding} bilateral?",
    ),
    "view": (
        "which view is this image taken?",
        "is this PA view?",
        "is this AP view?",
    ),
    "location": (
        "where in the image is the {finding} located?",
        "where is the {finding}?",
        "is the {finding} located on the left side or right side?",
    ),
    "level": ("what level is the {finding}?",),
    "type": ("what type is the {finding}?",),
    "difference": (
        "what has changed compared to the reference image?",
        "what has changed in the {region} area?",
    ),
}

# The difference-answer sentences (BENCHMARK.md "Difference answer grammar"), in the order they appear.
LEVEL_CHANGE_SENTENCE = "the level of {finding} has changed from {before} to {after}."
ADDITION_ONE = "the main image has an additional finding of {finding} than the reference image."
ADDITION_MANY = "the main image has additional findings of {findings} than the reference image."
REMOVAL_ONE = "the main image is missing the finding of {finding} than the reference image."
REMOVAL_MANY = "the main image is missing the findings of {findings} than the reference image."
NOTHING_CHANGED = "nothing has changed."


def example_questions() -> dict[str, list[str]]:
    """One filled-in example question per family, for pickers in the app."""
    out: dict[str, list[str]] = {}
    for family, forms in QUESTION_TEMPLATES.items():
        out[family] = [
            form.format(finding="pleural effusion", location="left lower lung",
                        post_location="left lung", region="left lung")
            for form in forms
        ]
    return out


def builtin_corpus() -> list[str]:
    """Sentences covering every word the benchmark's questions and answers use.

    Used to train the local tokenizer when GPT-2's is not available, so that a model built from a config
    alone has a deterministic vocabulary that covers the benchmark's grammar.
    """
    lines: list[str] = []
    for family, forms in QUESTION_TEMPLATES.items():
        for form in forms:
            for finding in FINDINGS:
                for location in LOCATION_WORDS:
                    lines.append(form.format(finding=finding, location=location,
                                             post_location=f"{location} lung", region=location))
    lines.extend(", ".join(FINDINGS[i:i + 3]) for i in range(len(FINDINGS)))
    for finding in FINDINGS:
        lines.append(ADDITION_ONE.format(finding=finding))
        lines.append(REMOVAL_ONE.format(finding=finding))
        for i, before in enumerate(LEVEL_WORDS):
            after = LEVEL_WORDS[(i + 3) % len(LEVEL_WORDS)]
            lines.append(LEVEL_CHANGE_SENTENCE.format(finding=finding, before=before, after=after))
        for word in TYPE_WORDS:
            lines.append(f"{word} {finding}")
        for location in LOCATION_WORDS:
            lines.append(f"the {location} area, {location} side, {location} lobe, {location} lung")
    lines.append(ADDITION_MANY.format(findings="edema, atelectasis, and pneumonia"))
    lines.append(REMOVAL_MANY.format(findings="edema, and atelectasis"))
    lines.extend([NOTHING_CHANGED, "yes", "no", "PA view", "AP view"])
    return lines
