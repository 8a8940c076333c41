"""Regenerate the stand-in trainer's flag tables from a real sd-scripts checkout.

Usage:
    python tools/extract_sdscripts_flags.py <sd-scripts dir> [--out jobs/sandbox/sdscripts]
    python tools/extract_sdscripts_flags.py --git-dir <bare repo> --rev 48d368fa [--out ...]

It never imports sd-scripts (torch is not installed here): it reads the source with `ast`, starts at each
script's `setup_parser()`, and follows every call that is handed the parser (`train_util.add_dataset_arguments(
parser, True, True, True)`, `train_network.setup_parser()`, ...) into the module the name was imported from.
`if support_x:` blocks inside those functions are decided from the constant the caller passed, so
`add_training_arguments(parser, False)` does not list the DreamBooth-only flags.

Writes three files:
- `flags.json`: {script: [sorted --flags]}, the contract other parts validate argument lists against;
- `flag_kinds.json`: {flag: {"action", "nargs", "type", "default", "choices"}} so the stand-in can build an
  argparse parser with the same arity as the real one (a store_true flag must not swallow the next token);
- `gen_flags.json`: {script: {flag: kind}} for the generation scripts /try runs (`gen_img.py`,
  `flux_minimal_inference.py`, whose parser is built inline under `if __name__ == "__main__":`).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCRIPTS = ("sdxl_train_network.py", "train_network.py", "flux_train_network.py")
# The generation scripts /try runs (docs/CONTRACTS.md "Try requests"). Their kinds are kept per script: gen_img.py's
# --network_weights takes several values (nargs="*") where the trainers' takes one.
GEN_SCRIPTS = ("gen_img.py", "flux_minimal_inference.py")

SourceReader = Callable[[str], str]
FlagKind = dict[str, Any]


class _Module:
    """One parsed source file and the names it imported (local name -> (module path, attribute or None))."""

    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.tree = ast.parse(source, filename=path)
        self.functions: dict[str, ast.FunctionDef] = {
            node.name: node for node in self.tree.body if isinstance(node, ast.FunctionDef)
        }
        self.imports: dict[str, tuple[str, str | None]] = {}
        for node in self.tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (_module_path(alias.name), None)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    local = alias.asname or alias.name
                    # `from library import train_util` names a module; `from library.utils import f` a function.
                    self.imports[local] = (_module_path(node.module), alias.name)


def _module_path(dotted: str) -> str:
    return dotted.replace(".", "/") + ".py"


class Extractor:
    def __init__(self, read: SourceReader) -> None:
        self._read = read
        self._modules: dict[str, _Module | None] = {}
        self.kinds: dict[str, FlagKind] = {}

    def module(self, path: str) -> _Module | None:
        if path not in self._modules:
            try:
                self._modules[path] = _Module(path, self._read(path))
            except (FileNotFoundError, KeyError):
                self._modules[path] = None  # a third-party module: it adds no sd-scripts flags
        return self._modules[path]

    def flags_of_script(self, script: str) -> list[str]:
        module = self.module(script)
        if module is None:
            raise SystemExit(f"{script}: not found")
        found: set[str] = set()
        if "setup_parser" in module.functions:
            self._walk_function(module, module.functions["setup_parser"], {}, found)
        else:
            # flux_minimal_inference.py builds its parser inline under `if __name__ == "__main__":`.
            main_block = next((node for node in module.tree.body if _is_main_guard(node)), None)
            if main_block is None:
                raise SystemExit(f"{script}: no setup_parser() and no __main__ block found")
            self._walk_body(module, main_block.body, {}, found)
        if not found:
            raise SystemExit(f"{script}: no --flag found")
        return sorted(found)

    def _walk_function(self, module: _Module, func: ast.FunctionDef, bound: dict[str, Any], found: set[str]) -> None:
        self._walk_body(module, func.body, bound, found)

    def _walk_body(self, module: _Module, body: list[ast.stmt], bound: dict[str, Any], found: set[str]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.If):
                decided = _decide(stmt.test, bound)
                if decided is None:
                    self._walk_body(module, stmt.body, bound, found)
                    self._walk_body(module, stmt.orelse, bound, found)
                else:
                    self._walk_body(module, stmt.body if decided else stmt.orelse, bound, found)
                continue
            for node in ast.walk(stmt):
                if isinstance(node, ast.Call):
                    self._visit_call(module, node, found)

    def _visit_call(self, module: _Module, call: ast.Call, found: set[str]) -> None:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "add_argument":
            self._record_argument(call, found)
            return
        target = self._resolve(module, func)
        if target is None:
            return
        target_module, target_func = target
        passes_parser = any(isinstance(a, ast.Name) and a.id == "parser" for a in call.args)
        if not passes_parser and target_func.name != "setup_parser":
            return
        bound = _bind_constants(target_func, call)
        self._walk_function(target_module, target_func, bound, found)

    def _resolve(self, module: _Module, func: ast.expr) -> tuple[_Module, ast.FunctionDef] | None:
        if isinstance(func, ast.Name):
            if func.id in module.functions:
                return module, module.functions[func.id]
            imported = module.imports.get(func.id)
            if imported and imported[1]:
                other = self.module(imported[0])
                if other and imported[1] in other.functions:
                    return other, other.functions[imported[1]]
            return None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            imported = module.imports.get(func.value.id)
            if imported is None:
                return None
            path, attr = imported
            # `from library import train_util` -> library/train_util.py; `import train_network` -> train_network.py
            module_path = path[: -len(".py")] + "/" + attr + ".py" if attr else path
            other = self.module(module_path)
            if other and func.attr in other.functions:
                return other, other.functions[func.attr]
        return None

    def _record_argument(self, call: ast.Call, found: set[str]) -> None:
        names = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        long_names = [n for n in names if n.startswith("--")]
        if not long_names:
            return
        kind: FlagKind = {"action": "store", "nargs": None, "type": "str", "default": None, "choices": None}
        for keyword in call.keywords:
            if keyword.arg in ("action", "nargs", "default", "choices"):
                kind[keyword.arg] = _literal(keyword.value)
            elif keyword.arg == "type":
                kind["type"] = keyword.value.id if isinstance(keyword.value, ast.Name) else "str"
            elif keyword.arg == "required" and _literal(keyword.value) is True:
                kind["required"] = True  # flux_minimal_inference.py's --ckpt_path; only written where it is set
        if kind["action"] in ("store_true", "store_false"):
            kind["type"] = None
        for name in long_names:
            found.add(name)
            self.kinds[name] = kind


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    left, comparators = node.test.left, node.test.comparators
    return (
        isinstance(left, ast.Name)
        and left.id == "__name__"
        and len(comparators) == 1
        and isinstance(comparators[0], ast.Constant)
        and comparators[0].value == "__main__"
    )


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None  # computed at runtime in sd-scripts; the stand-in does not need it


def _bind_constants(func: ast.FunctionDef, call: ast.Call) -> dict[str, Any]:
    """Parameter name -> constant the caller passed, for deciding `if support_x:` blocks."""
    params = [a.arg for a in func.args.args]
    bound: dict[str, Any] = {}
    defaults = func.args.defaults
    for name, default in zip(params[len(params) - len(defaults) :], defaults, strict=True):
        if isinstance(default, ast.Constant):
            bound[name] = default.value
    for name, arg in zip(params, call.args, strict=False):
        if isinstance(arg, ast.Constant):
            bound[name] = arg.value
    for keyword in call.keywords:
        if keyword.arg and isinstance(keyword.value, ast.Constant):
            bound[keyword.arg] = keyword.value.value
    return bound


def _decide(test: ast.expr, bound: dict[str, Any]) -> bool | None:
    if isinstance(test, ast.Name) and test.id in bound:
        return bool(bound[test.id])
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _decide(test.operand, bound)
        return None if inner is None else not inner
    return None


def directory_reader(root: Path) -> SourceReader:
    def read(path: str) -> str:
        return (root / path).read_text(encoding="utf-8")

    return read


def git_reader(git_dir: Path, rev: str) -> SourceReader:
    def read(path: str) -> str:
        result = subprocess.run(
            ["git", "--git-dir", str(git_dir), "show", f"{rev}:{path}"], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise FileNotFoundError(path)
        return result.stdout

    return read


def extract(read: SourceReader) -> tuple[dict[str, list[str]], dict[str, FlagKind]]:
    extractor = Extractor(read)
    flags = {script: extractor.flags_of_script(script) for script in SCRIPTS}
    used = sorted({flag for names in flags.values() for flag in names})
    return flags, {flag: extractor.kinds[flag] for flag in used}


def extract_generation(read: SourceReader) -> dict[str, dict[str, FlagKind]]:
    """{script: {flag: kind}} for the generation scripts, one extractor each so kinds never mix across scripts."""
    result: dict[str, dict[str, FlagKind]] = {}
    for script in GEN_SCRIPTS:
        extractor = Extractor(read)
        result[script] = {flag: extractor.kinds[flag] for flag in extractor.flags_of_script(script)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", nargs="?", type=Path, help="an sd-scripts work tree")
    parser.add_argument("--git-dir", type=Path, help="a git directory to read with `git show` instead")
    parser.add_argument("--rev", default="HEAD", help="commit to read with --git-dir")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "jobs/sandbox/sdscripts")
    args = parser.parse_args(argv)
    if args.git_dir:
        read = git_reader(args.git_dir, args.rev)
    elif args.checkout:
        read = directory_reader(args.checkout)
    else:
        parser.error("give an sd-scripts checkout or --git-dir")
    flags, kinds = extract(read)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flags.json").write_text(json.dumps(flags, indent=1) + "\n", encoding="utf-8")
    (args.out / "flag_kinds.json").write_text(json.dumps(kinds, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    generation = extract_generation(read)
    (args.out / "gen_flags.json").write_text(json.dumps(generation, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for script, names in [*flags.items(), *generation.items()]:
        print(f"{script}: {len(names)} flags", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
