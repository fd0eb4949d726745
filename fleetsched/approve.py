"""`fleetsched approve`: a person's decision on a pod or gang an approval rule holds, written as an Approval.

The Approval goes to the extender's namespace (`extender.governance_api` says what it holds),
which the pod's owner cannot write; the `fleetsched-approver` Role (deploy/manifests/
governance.yaml) lets approvers create them. One object per pod or gang: a decision stands
until an administrator deletes it.
"""

from __future__ import annotations

import json
import re

from extender.governance_api import GROUP, UNREACHABLE, VERSION, RestLike, approval_object, read_approval
from extender.kubeapi import ApiError
from scheduler.errors import FleetschedError, InputError

# A namespace's name is a DNS label (RFC 1123): what the API server would refuse anyway, said first.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_names(target: str, namespace: str, extender_namespace: str, *, gang: bool) -> str:
    """The command's names checked before anything is read (the kubeconfig included): one
    InputError naming the argument that is wrong. Returns the target as `namespace/name`."""
    for flag, value in (("--namespace", namespace), ("--extender-namespace", extender_namespace)):
        if not _NAMESPACE.match(value):
            raise InputError(f"{value!r} is not a namespace: up to 63 lower case letters, digits and '-'", field=flag)
    try:
        approval_object(extender_namespace, f"{namespace}/{target}", gang, True, "", "")
    except ValueError:
        raise InputError(f"{target!r} is not a name: lower case letters, digits, '-' and '.'",
                         field="POD|GANG") from None
    return f"{namespace}/{target}"


def approve(rest: RestLike, namespace: str, target: str, *, gang: bool, approved: bool, reason: str,
            approver: str) -> str:  # fmt: skip
    """Writes one Approval in the extender's `namespace` (`fleetsched approve`); returns a line
    saying so. Every refusal is a FleetschedError of one line."""
    try:
        approval = approval_object(namespace, target, gang, approved, reason, approver)
    except ValueError as error:
        raise InputError(str(error), field="POD|GANG") from None
    name = approval["metadata"]["name"]
    try:
        rest.request("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/approvals", approval, timeout_s=10.0)
    except ApiError as error:
        raise FleetschedError(_refusal(rest, error, name, namespace)) from None
    except UNREACHABLE as error:
        raise FleetschedError(f"cannot reach the API server: {error}") from None
    except ValueError as error:  # a 2xx answer that is not JSON: not an API server, or a proxy in the way
        raise FleetschedError(f"the API server's answer is not JSON ({error}): whether approval {namespace}/{name} "
                              f"was created is unknown; kubectl get approvals -n {namespace} tells") from None
    what = "gang" if gang else "pod"
    return f"{'approved' if approved else 'rejected'} {what} {target} (approval {namespace}/{name})"


def _refusal(rest: RestLike, error: ApiError, name: str, namespace: str) -> str:
    """One line for an API server's refusal to create an Approval."""
    if error.status == 409:
        try:
            existing = read_approval(rest.request(
                "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/approvals/{name}", timeout_s=10.0))
        except (ApiError, ValueError, *UNREACHABLE):
            existing = None
        said = (f" ({'approved' if existing.approved else 'rejected'} by {existing.approver or 'someone'})"
                if existing is not None else "")  # fmt: skip
        return f"approval {namespace}/{name} exists already{said}: a decision stands until an administrator deletes it"
    if error.status == 404:
        return (f"the API server has no approvals.{GROUP} in namespace {namespace} "
                "(apply deploy/manifests/governance.yaml; --extender-namespace names where the extender runs)")
    if error.status in (401, 403):
        return f"not allowed to create approvals in {namespace}: bind the fleetsched-approver role ({error})"
    return f"the API server refused the approval: {_message(error)}"


def _message(error: ApiError) -> str:
    """The API server's own message in a refusal (its Status object), else the refusal as it came."""
    _, _, body = str(error).partition(": ")
    try:
        said = json.loads(body).get("message")
    except (ValueError, AttributeError):
        said = None
    return f"HTTP {error.status}: {said}" if isinstance(said, str) else str(error)
