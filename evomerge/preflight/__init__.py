"""Pre-flight checks (``evomerge validate``): is a recipe or search config runnable, judged from headers only?"""

from evomerge.preflight.report import Check, Report, render
from evomerge.preflight.runner import validate_file

__all__ = ["Check", "Report", "render", "validate_file"]
