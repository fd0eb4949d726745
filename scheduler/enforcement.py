"""Whether a profile enforces a governance file's rules, and the warning to give when it does not.

A governance file's budgets, quotas and approvals hold a job only through the guardrail
plugins (`policies.governance`: the bundled profile `governed` names them all). Under any
other profile the simulator still keeps the books and reports each team's spend in the
run's summary, and the extender keeps its spend book, but nothing is ever held: a user who
gave a governance file and forgot the profile would believe the rules hold (docs/guardrails.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from scheduler.profile import Profile

log = logging.getLogger(__name__)

#: The plugins that hold or refuse a job by a governance file's rules (policies.governance).
GUARDRAIL_PLUGINS = ("ApprovalGate", "QuotaLimit", "BudgetGuard", "BudgetSpotOnly")
#: The bundled profile that names them all.
ENFORCING_PROFILE = "governed"
#: What becomes of the rules where no guardrail plugin runs, by command.
SIMULATED = "only reported (summary.json, its governance section), not enforced"
PLANNED = "not applied to the plan"
SERVED = "only reported (spend on /metrics and in the spend book), not enforced"


def plugin_names(profile: Profile) -> frozenset[str]:
    """The names of every plugin `profile` runs, at any hook."""
    hooks = (profile.admit, profile.prefilter, profile.filter, profile.postfilter, profile.provision)
    plugins: list[object] = [profile.sort, *(plugin for hook in hooks for plugin in hook),
                             *(plugin for plugin, _ in profile.score), profile.reserve]
    return frozenset(str(getattr(plugin, "name", "")) for plugin in plugins)


def enforces(profile: Profile) -> bool:
    """Whether `profile` runs a guardrail plugin, which holds or refuses jobs by the rules."""
    return bool(plugin_names(profile) & set(GUARDRAIL_PLUGINS))


def unenforced(profile: Profile, governance: str, fate: str) -> str:
    """One line warning that `profile` enforces none of `governance`'s rules (it has no
    guardrail plugin), saying what becomes of them instead (`fate`: SIMULATED, PLANNED,
    SERVED); "" when it has one."""
    if enforces(profile):
        return ""
    return (f"profile {profile.name} has no guardrail plugin ({', '.join(GUARDRAIL_PLUGINS)}): the budgets, "
            f"quotas and approvals of {governance} are {fate}; profile {ENFORCING_PROFILE} enforces them")


def warn_unenforced(governance: object, profiles: Sequence[str], load: Callable[[str], Profile], fate: str) -> None:
    """Logs `unenforced`'s warning for each of `profiles` (loaded by `load`) that enforces
    none of the governance file's rules; nothing without a governance file (`governance` None or "")."""
    for name in profiles if governance else ():
        warning = unenforced(load(name), str(governance), fate)
        if warning:
            log.warning("%s", warning)
