"""Tasks: classification, semantic segmentation, super-resolution and detection, each one registered object.

``get_task(name)`` and ``task_of(config)`` look one up; ``TASKS.list()`` names them.
See :mod:`pipelines.tasks.base` for the contract every task fulfils.
"""

from pipelines.tasks.base import TASKS, Task, get_task, task_for_outputs, task_of
from pipelines.tasks import classification, detection, segmentation, super_resolution  # noqa: F401,E402  (registers them)

__all__ = ["TASKS", "Task", "get_task", "task_for_outputs", "task_of"]
