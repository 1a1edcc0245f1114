"""The feedback loop's sensor and trigger, for DAGs that import from the Airflow plugins folder.

    from feedback_sensor import FeedbackThresholdSensor

They are defined in `dpo_tasks.feedback.sensor` (see its docstring): the triggerer must be able to
import the trigger by class path on any machine that has the package, plugins folder or not.
"""

from dpo_tasks.feedback.sensor import FeedbackThresholdSensor, FeedbackThresholdTrigger

__all__ = ["FeedbackThresholdSensor", "FeedbackThresholdTrigger"]
