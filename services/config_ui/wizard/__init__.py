"""The configuration wizard: steps, their form fields and the draft configuration they edit.

Pure logic for the web pages. A draft is the JSON form of a configuration
(`SystemConfig.model_dump(mode="json")`) that may be invalid while it is being edited. The form
fields are found by walking `SystemConfig`'s pydantic fields, so a new setting appears in the
step that owns its section without any change here.
"""

from __future__ import annotations

from services.config_ui.wizard.charts import LevelChart, level_charts
from services.config_ui.wizard.derivation import (
    ChangeRow,
    Choice,
    Rederivation,
    choose,
    describe_changes,
)
from services.config_ui.wizard.draft_access import ocv_source
from services.config_ui.wizard.drafts import FormResult, apply_form, draft_from_config, new_draft
from services.config_ui.wizard.fields import FieldSpec, fields_for_step
from services.config_ui.wizard.ocv_csv import (
    OCV_CSV_MAX_BYTES,
    OcvImport,
    form_text,
    ocv_note,
    parse_ocv_csv,
)
from services.config_ui.wizard.steps import (
    STEPS,
    WizardStep,
    next_step,
    prev_step,
    step,
    step_of_path,
)
from services.config_ui.wizard.validation import (
    errors_for_step,
    first_step_with_errors,
    problems_once,
    validate,
)

__all__ = [
    "OCV_CSV_MAX_BYTES",
    "STEPS",
    "ChangeRow",
    "Choice",
    "FieldSpec",
    "FormResult",
    "LevelChart",
    "OcvImport",
    "Rederivation",
    "WizardStep",
    "apply_form",
    "choose",
    "describe_changes",
    "draft_from_config",
    "errors_for_step",
    "fields_for_step",
    "first_step_with_errors",
    "form_text",
    "level_charts",
    "new_draft",
    "next_step",
    "ocv_note",
    "ocv_source",
    "parse_ocv_csv",
    "prev_step",
    "problems_once",
    "step",
    "step_of_path",
    "validate",
]
