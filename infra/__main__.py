"""Entry point that `pulumi up` runs (Pulumi.yaml sets `main: infra/`)."""

import sys
from pathlib import Path

# Pulumi runs this file as a script, so the repository root, which contains
# the `infra` package, is not on the import path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.config import load_config  # noqa: E402
from infra.stack import build_stack, export_outputs  # noqa: E402

export_outputs(build_stack(load_config()))
