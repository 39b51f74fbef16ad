"""Offline mode: the stack of `template.yaml` on moto, in this process.

`Environment` (environment.py) creates the template's resources in moto, runs the real
ASL with moto's Step Functions interpreter, routes Lambda invokes to the real handlers
of `functions/` and the EventBridge rule to the state machine. `rxguard run` (cli.py)
drives it for claim batches and writes the output contract of docs/design.md.

moto is a development dependency: import this package only where moto is installed
(CLI, tests, benchmarks), never from a Lambda handler.
"""

from rxguard_tools.offline.cfn import TemplateError, load_template
from rxguard_tools.offline.environment import Environment, Execution, Subscription, execution_name

__all__ = ["Environment", "Execution", "Subscription", "TemplateError", "execution_name", "load_template"]
