"""Entry point of ``python -m starter``: it ends with ``exit_at_once`` once the answer is
printed (the Temporal client's threads could otherwise turn a successful command into exit code
134, temporalio/sdk-python#300)."""

from common.temporal import exit_at_once
from starter.cli import main

exit_at_once(main())
