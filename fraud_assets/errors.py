"""Errors shared by the command line and the runners.

This module imports nothing of fraud_assets, so any module may raise these errors without an
import circle: the CLI (:mod:`fraud_assets.cli`) catches them, it does not define them.
"""


class OperatorError(RuntimeError):
    """A problem the operator can fix; its message says what to do.

    The command line prints it as one line (``fraud-assets <command>: error: ...``), without
    a stack trace, and exits 2.
    """
