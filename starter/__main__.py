"""Entry point of ``python -m starter``.

The process ends with ``os._exit`` once the answer is printed and flushed: the Temporal client's
Rust threads can outlive the event loop and abort a normal interpreter shutdown (SIGABRT,
"PyGILState_Release ... must be current", temporalio/sdk-python#300), which would turn a
successful command into exit code 134.
"""

import os
import sys

from starter.cli import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
