"""policy validate | plan | apply | explain | test | schema."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem
from ..identity import Principal
from ..policy import bundle as policy_bundle
from ..policy.apply import apply, plan
from ..policy.arguments import argument_violation
from ..policy.engine import PolicyState, comparable, decide, why
from ..policy.snapshot import build
from ..policy.uris import AmbiguousURI
from ..policy_model import Rule, Target
from ..store import state as state_store
from .common import add_config, config_at_hand, load_all, run_with_store, store, warn_unknown_servers


def register(sub: Any) -> None:
    policy = sub.add_parser("policy", help="policy files: validate, plan, apply, explain, test")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="COMMAND")

    validate = policy_sub.add_parser("validate", help="check a directory of policy files (every error, with file:line)")
    validate.add_argument("directory", type=Path, help="the directory of policy files (*.yaml)")
    validate.add_argument(
        "--config",
        "-c",
        help="warn of rules naming servers this config lacks (default: $MCP_GATEWAY_CONFIG or ./gateway.yaml, if any)",
    )
    validate.set_defaults(run=run_validate)

    planning = policy_sub.add_parser("plan", help="what applying the directory would change in the live store")
    planning.add_argument("directory", type=Path, help="the directory of policy files to compare with the live policy")
    add_config(planning)
    planning.set_defaults(run=run_plan)

    applying = policy_sub.add_parser("apply", help="make the directory the live policy (a new version)")
    applying.add_argument("directory", type=Path, help="the directory of policy files to apply")
    applying.add_argument("--force", action="store_true", help="a new version even if the content is unchanged")
    add_config(applying)
    applying.set_defaults(run=run_apply)

    explain = policy_sub.add_parser("explain", help="which rule decides a call, and why")
    explain.add_argument("--principal", required=True, help="TEAM/NAME, or TEAM alone for any principal of the team")
    target = explain.add_mutually_exclusive_group(required=True)
    target.add_argument("--tool", help="SERVER__TOOL")
    target.add_argument("--prompt", help="SERVER__PROMPT")
    target.add_argument("--resource", help="SERVER+URI")
    explain.add_argument("--arguments", help="the call's arguments as JSON")
    explain.add_argument("--policies", type=Path, help="explain with this directory's rules instead of the live ones")
    add_config(explain)
    explain.set_defaults(run=run_explain)

    test = policy_sub.add_parser("test", help="run the test cases kept beside the rules")
    test.add_argument("directory", type=Path, help="the directory of policy files whose `tests:` to run")
    test.set_defaults(run=run_test)

    schema = policy_sub.add_parser("schema", help="print the policy files' JSON Schema")
    schema.set_defaults(run=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    bundle = policy_bundle.load(args.directory)
    config = config_at_hand(args)
    if config is not None:
        warn_unknown_servers(bundle, config)
    shadow = sum(r.shadow for r in bundle.rules)
    print(
        f"ok: {len(bundle.rules)} rule(s) ({shadow} shadow) for {len(bundle.teams)} team(s), "
        f"{len(bundle.tests)} test(s), in {len(bundle.files)} file(s); content {bundle.content_hash[:12]}"
    )
    return 0


def _describe(rule: Rule) -> str:
    parts = [f"{rule.effect} servers={list(rule.servers)}"]
    if not rule.names_a_kind:
        parts.append("(every kind)")
    for name in ("tools", "prompts", "resources"):
        value = getattr(rule, name)
        if value is not None:
            parts.append(f"{name}={list(value)}")
    if rule.arguments:
        parts.append(f"arguments={json.dumps(rule.arguments)}")
    if rule.shadow:
        parts.append("(shadow)")
    return f"{rule.id} [{rule.team}] " + " ".join(parts)


def run_plan(args: argparse.Namespace) -> int:
    bundle = policy_bundle.load(args.directory)
    config, settings = load_all(args)
    warn_unknown_servers(bundle, config)

    async def main() -> Any:
        async with store(settings) as engine:
            return await plan(engine, bundle)

    changes = run_with_store(settings, main)
    if changes.empty:
        print("no changes: the live policy already matches")
        return 0
    for team in changes.teams_added:
        print(f"+ team {team}")
    for rule in changes.added:
        print(f"+ {_describe(rule)}")
    for old, new in changes.changed:
        print(f"~ {_describe(old)}\n  -> {_describe(new)}")
    for rule in changes.removed:
        print(f"- {_describe(rule)}")
    print(f"\n{len(changes.added)} to add, {len(changes.changed)} to change, {len(changes.removed)} to remove")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    bundle = policy_bundle.load(args.directory)
    _, settings = load_all(args)

    async def main() -> int | None:
        async with store(settings) as engine:
            return await apply(engine, bundle, args.directory, actor="mcp-gateway policy apply", force=args.force)

    version = run_with_store(settings, main)
    if version is None:
        print(f"unchanged: the live policy already is {args.directory} ({bundle.content_hash[:12]})")
    else:
        print(f"applied {args.directory} as policy version {version} ({bundle.content_hash[:12]})")
    return 0


def parse_target(kind: str, value: str) -> Target:
    """`SERVER__TOOL`, `SERVER__PROMPT` or `SERVER+URI` as a policy target."""
    if kind == "resource":
        server, sep, name = value.partition("+")
    else:
        server, sep, name = value.partition("__")
    if not sep or not server or not name:
        form = "SERVER+URI" if kind == "resource" else f"SERVER__{kind.upper()}"
        raise ConfigError([Problem("arguments", None, f"{value!r} is not of the form {form}")])
    return Target(server, kind, name)  # type: ignore[arg-type]


def _principal(value: str) -> Principal:
    team, _, name = value.partition("/")
    return Principal(id=value if name else f"{team}/*", team=team, name=name)


def run_explain(args: argparse.Namespace) -> int:
    kind = "tool" if args.tool else "prompt" if args.prompt else "resource"
    target = parse_target(kind, args.tool or args.prompt or args.resource)
    arguments = None
    if args.arguments:
        try:
            arguments = json.loads(args.arguments)
        except ValueError as exc:
            raise ConfigError([Problem("--arguments", None, f"not JSON: {exc}")]) from None
        if not isinstance(arguments, dict):
            raise ConfigError([Problem("--arguments", None, "must be a JSON object of argument names to values")])
    if args.policies is not None:
        bundle = policy_bundle.load(args.policies)
        state = PolicyState.build(bundle.rules)
        principal = _principal(args.principal)
        source = f"policy files in {args.policies}"
    else:
        _, settings = load_all(args)

        async def main() -> Any:
            async with store(settings) as engine:
                return build(await state_store.load(engine))

        snapshot = run_with_store(settings, main)
        state = snapshot.policy
        principal = snapshot.principals.get(args.principal) or _principal(args.principal)
        source = f"the live policy (version {state.policy_version})"
    decision = decide(state, principal, target, time.time(), arguments=arguments if kind == "tool" else None)
    print(
        f"{decision.effect.upper()}: {principal.id} (team {principal.team}) "
        f"-> {kind} {target.name!r} of {target.server!r}"
    )
    print(f"  why: {decision.reason}")
    print(f"  according to {source}")
    team = state.teams.get(principal.team)
    compared = comparable(target)
    if isinstance(compared, AmbiguousURI):
        print(f"  the URI has no single reading, so no rule is compared with it: {compared}")
    elif team is not None:
        if compared != target:
            print(f"  compared in normal form: {compared.name!r}")
        matching = team.matching(compared)
        print(f"  rules of team {principal.team} that match, in order ({len(matching)}):")
        for rule in matching:
            print(f"    {_describe(rule)}")
            print(f"      matched: {_matched(rule, compared, arguments if kind == 'tool' else None)}")
    else:
        print(f"  team {principal.team} has no rules")
    if decision.kill_switch_id:
        print(f"  kill switch: {decision.kill_switch_id}")
    if decision.shadow:
        print(f"  shadow policy: {decision.shadow} (rule {decision.shadow_rule_id})")
    return 0 if decision.allowed else 1


def _matched(rule: Rule, target: Target, arguments: dict[str, Any] | None) -> str:
    """Every pattern of `rule` that `target` met, and what its argument constraints say."""
    met = why(rule, target)
    parts = [f"server {target.server!r} by servers {list(met.servers)}"]
    if met.kind_field is None:
        parts.append(f"{target.kind} {target.name!r}: the rule names no kind, so it covers every kind")
    else:
        parts.append(f"{target.kind} {target.name!r} by {met.kind_field} {list(met.names)}")
    if rule.arguments and arguments is not None:
        violation = argument_violation(rule.arguments, arguments)
        parts.append(f"arguments refused: {violation}" if violation else "arguments satisfy its constraints")
    return "; ".join(parts)


def run_test(args: argparse.Namespace) -> int:
    bundle = policy_bundle.load(args.directory)
    state = PolicyState.build(bundle.rules)
    failures = 0
    for case in bundle.tests:
        doc = case.doc
        principal = _principal(doc.principal or doc.team or "")
        kind = "tool" if doc.call else "prompt" if doc.prompt else "resource"
        try:
            target = parse_target(kind, doc.call or doc.prompt or doc.resource or "")
        except ConfigError as exc:
            print(f"FAIL {case.file}:{case.line}: {exc.problems[0].message}")
            failures += 1
            continue
        decision = decide(state, principal, target, time.time(), arguments=doc.arguments if kind == "tool" else None)
        label = doc.name or f"{principal.id} -> {doc.call or doc.prompt or doc.resource}"
        if decision.effect == doc.expect:
            print(f"pass {label}: {decision.effect} ({decision.reason})")
        else:
            failures += 1
            print(
                f"FAIL {case.file}:{case.line}: {label}: "
                f"expected {doc.expect}, got {decision.effect} ({decision.reason})"
            )
    print(f"\n{len(bundle.tests) - failures} passed, {failures} failed")
    return 1 if failures else 0


def run_schema(args: argparse.Namespace) -> int:
    json.dump(policy_bundle.schema(), sys.stdout, indent=2)
    print()
    return 0
