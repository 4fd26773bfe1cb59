"""init: write the example gateway (config, example upstream, policy bundle) into a directory.

The examples travel inside the package (the wheel carries `examples/` and `policies/` as
`mcp_gateway/examples` and `mcp_gateway/policies`), so an installed gateway (`pipx
install`, `uv tool install`) can set itself up with nothing else at hand. `init` copies
them out, since a gateway's directory is where its store grows and its policies are edited,
which the installed package is not the place for.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

EXIT_CONFIG = 2

CONFIG = "gateway.yaml"
UPSTREAM = "everything_server.py"
UPSTREAM_MODULES = ("everything_scenarios.py", "tasks_tools.py")
"""What the example upstream imports, written beside it."""


def register(sub: Any) -> None:
    init = sub.add_parser(
        "init",
        help="write the example gateway into DIRECTORY: gateway.yaml, the example upstream, a policies/ bundle",
    )
    init.add_argument("directory", metavar="DIRECTORY", help="where to write it (created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist already")
    init.set_defaults(run=run_init)


def examples() -> tuple[Path, Path]:
    """The bundled example directory and policy bundle: inside the installed package, or
    the repository's own in a checkout."""
    here = Path(__file__).resolve().parent.parent
    for root in (here, here.parent):
        if (root / "examples" / CONFIG).is_file() and (root / "policies").is_dir():
            return root / "examples", root / "policies"
    raise FileNotFoundError("the bundled examples are missing from this installation")


def _config_text(source: Path) -> str:
    """The example config, pointed at the policy bundle beside it rather than `../policies`."""
    text = source.read_text(encoding="utf-8")
    text = text.replace("policies: ../policies", "policies: policies")
    text = text.replace(
        "# The policy bundle kept in git beside this file", "# The policy bundle in policies/ beside this file"
    )
    text = text.replace("beside this config (examples/mcp-gateway.db)", "beside this config (mcp-gateway.db)")
    return text.replace(
        "# The example configuration `mcp-gateway serve` uses when given no --config.",
        "# Written by `mcp-gateway init`: the example gateway. Serve it with\n"
        "#   mcp-gateway serve --config <this file>",
    )


def executable() -> str:
    """The absolute path of the `mcp-gateway` being run: what a GUI client, which does not
    read the shell's PATH, must be given."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "mcp-gateway" and argv0.exists():
        return str(argv0.resolve())
    found = shutil.which("mcp-gateway")
    return str(Path(found).resolve()) if found else "mcp-gateway"


def run_init(args: argparse.Namespace) -> int:
    target = Path(args.directory).expanduser().resolve()
    source, policies = examples()
    writes = {target / CONFIG: _config_text(source / CONFIG), target / UPSTREAM: (source / UPSTREAM).read_text()}
    for module in UPSTREAM_MODULES:
        writes[target / module] = (source / module).read_text()
    for policy in sorted(policies.glob("*.yaml")):
        writes[target / "policies" / policy.name] = policy.read_text(encoding="utf-8")
    # A symlink counts as there (even one to nothing), and is replaced, never written
    # through: a link planted where init writes would otherwise send the file elsewhere.
    existing = [path for path in writes if path.exists() or path.is_symlink()]
    if existing and not args.force:
        print(f"error: {existing[0]} exists already (--force overwrites)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        for path, text in writes.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                path.unlink()
            path.write_text(text, encoding="utf-8")
    except OSError as exc:  # a file where the directory goes, no permission, a full disk
        where = exc.filename or target
        print(f"error: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    config = target / CONFIG
    binary = executable()
    snippet = {"mcpServers": {"gateway": {"command": binary, "args": ["stdio", "--config", str(config)]}}}
    print(f"wrote {config}, {target / UPSTREAM} and {target / 'policies'}/")
    print(f"\nserve it over HTTP:  {binary} serve --config {config}")
    print(f"or try the stdio form:  {binary} stdio --config {config}")
    print("\na GUI client (Claude Desktop, Cursor) spawns it by absolute path:")
    print(json.dumps(snippet, indent=2))
    return 0
