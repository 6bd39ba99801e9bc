"""Entry point that Pulumi runs for `pulumi preview --policy-pack policy`."""

import sys
from pathlib import Path

# A published pack runs from a copy of this directory alone, without the
# repository around it, so `rules` is imported from beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pulumi_policy import PolicyPack  # noqa: E402
from rules import ENFORCEMENT_LEVEL, PACK_NAME, POLICIES  # noqa: E402

PolicyPack(name=PACK_NAME, enforcement_level=ENFORCEMENT_LEVEL, policies=POLICIES)
