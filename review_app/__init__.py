"""The review app's logic behind ``app.py``: examples, rendering, the review service, errors and launch settings.

``app.py`` only lays out the Gradio UI and wires events to :class:`review_app.service.ReviewService`;
everything here is importable and testable without a browser. Nothing here is imported by ``diffvqa_core``
or ``feedback_db`` (data flows one way: pipeline -> app -> feedback_db).
"""

import os as _os

# No outbound calls from the app: Gradio's analytics and the hub's telemetry are off unless a user opts in.
for _key, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("HF_HUB_OFFLINE", "1")):
    _os.environ.setdefault(_key, _value)
