"""What each gauge the extender serves on /metrics means: the text of its `# HELP` line."""

from __future__ import annotations

GAUGE_HELP = {
    "fleetsched_plan_age_seconds": "Seconds since the current plan was made (or found still good).",
    "fleetsched_pending_pods": "Pods the plan was made for that wait for a node (a gang counts each pod).",
    "fleetsched_committed_usd_per_hour": "USD per hour the plan's placements of pending pods add when they bind "
                                         "(0 when nothing waits); the spend of pods already bound is not in it.",
    "fleetsched_idle_gpus": "Free GPUs of ready, schedulable nodes, per pool (MIG: free compute slices as GPUs).",
    "fleetsched_budget_usd": "A budget's dollars for its current period.",
    "fleetsched_budget_committed_usd": "Spent plus reserved against a budget in its current period.",
    "fleetsched_team_spend_usd": "A team's spend in the current period, by budget period.",
    "fleetsched_held_jobs": "Pods a guardrail holds, by team and guardrail.",
    "fleetsched_denied_jobs": "Pods a guardrail denied, by team.",
    "fleetsched_fair_share_gpus": "A queue's fair share of GPUs, per flavour.",
    "fleetsched_used_gpus": "GPUs a queue's running pods hold, per flavour.",
    "fleetsched_team_allocated_idle_gpu_hours": "GPU-hours allocated and idle over the usage window, by team.",
    "fleetsched_team_allocated_idle_usd": "Dollars of allocated-but-idle GPU time over the usage window, by team.",
    "fleetsched_usage_unpriced_gpu_hours": "Allocated-but-idle GPU-hours of GPU models with no price.",
    "fleetsched_usage_source_up": "1 when the last usage query to Prometheus succeeded, else 0.",
    "fleetsched_usage_age_seconds": "Seconds since the usage figures were last refreshed.",
}

