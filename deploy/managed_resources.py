"""Prints the `managedResources` of fleetsched's scheduler configurations, from the GPU catalog.

Run from the repository root after the catalog changes, and paste the lines into each
scheduler configuration of deploy/manifests/fleetsched.yaml (tests/test_deploy.py checks them):
`python deploy/managed_resources.py`
"""

from __future__ import annotations

import sys

from extender.translate import managed_resources
from scheduler.catalog import default_catalog


def main() -> int:
    sys.stdout.write("managedResources:\n")
    for name in managed_resources(default_catalog()):
        sys.stdout.write(f"- {{name: {name}, ignoredByScheduler: false}}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
