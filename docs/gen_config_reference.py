"""The configuration reference page, generated from ``conf/`` so that it cannot drift.

Every config group, every option (YAML file), every key with its default and the comment
beside it in the YAML. It is an MkDocs hook (``hooks:`` in ``mkdocs.yml``): ``make docs``
adds the page ``reference.md`` to the site at every build, and nothing is written into
``docs/``. Run it as a script to read the page without MkDocs::

    python docs/gen_config_reference.py > reference.md

Keys and defaults come from PyYAML's node tree, read with OmegaConf's loader; the comments
come from the raw lines, at the line numbers PyYAML gives each key.
``tests/test_docs.py`` checks the page against ``OmegaConf.load`` of every file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONF = Path(__file__).resolve().parents[1] / "conf"
PAGE = "reference.md"

try:  # the YAML loader OmegaConf reads conf/ with (it reads 1e-3 as a float, as Hydra does)
    from omegaconf._utils import get_yaml_loader

    LOADER = get_yaml_loader()
except ImportError:  # pragma: no cover
    LOADER = yaml.SafeLoader


@dataclass
class Key:
    """One leaf key of a YAML file: its path in the file, default (plain YAML value) and comment."""

    path: tuple[str, ...]
    default: Any
    comment: str


@dataclass
class Option:
    """One YAML file of conf/."""

    file: Path
    package: str  # "" for _global_ (and for config.yaml)
    header: list[str]
    defaults: list[tuple[str, str]] = field(default_factory=list)  # (entry, comment)
    keys: list[Key] = field(default_factory=list)
    nodes: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (path, comment) of mapping keys


def _comment_after(line: str, start: int) -> str:
    """The ``# comment`` on ``line`` at or after column ``start`` (outside quotes), or ''."""
    quote = None
    for i in range(start, len(line)):
        char = line[i]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[i + 1 :].strip()
    return ""


def _comments_above(lines: list[str], row: int, stop: int) -> list[str]:
    """Whole-line comments directly above ``row`` (not above ``stop``, the file header's end)."""
    found = []
    row -= 1
    while row >= stop and lines[row].strip().startswith("#"):
        found.append(lines[row].strip()[1:].strip())
        row -= 1
    return found[::-1]


def _end_column(node: yaml.Node) -> int:
    """Where a value written on its key's line ends (a one-pair mapping: its value's end)."""
    if isinstance(node, yaml.MappingNode) and len(node.value) == 1:
        return _end_column(node.value[0][1])
    return node.end_mark.column


def _comment(lines: list[str], key: yaml.Node, value: yaml.Node, stop: int) -> str:
    """The comments of a key: whole-line ones directly above it, then the one on its line."""
    row = key.start_mark.line
    start = value.end_mark.column if value.end_mark.line == row else key.end_mark.column
    parts = _comments_above(lines, row, stop) + [_comment_after(lines[row], start)]
    return " ".join(part for part in parts if part)


def _plain(node: yaml.Node) -> Any:
    return yaml.load(yaml.serialize(node), Loader=LOADER)  # noqa: S506 (OmegaConf's safe loader)


def _walk(lines: list[str], node: yaml.MappingNode, prefix: tuple[str, ...], stop: int, option: Option) -> None:
    for key_node, value in node.value:
        path = (*prefix, key_node.value)
        if not prefix and key_node.value == "defaults" and isinstance(value, yaml.SequenceNode):
            for item in value.value:
                entry = render_value(_plain(item)).removeprefix("{").removesuffix("}")
                option.defaults.append((entry, _comment_after(lines[item.start_mark.line], _end_column(item))))
            continue
        if isinstance(value, yaml.MappingNode) and value.value:
            comment = _comment(lines, key_node, value, stop)
            if comment:  # a comment on a node's own line (``server:  # the loop``)
                option.nodes.append((path, comment))
            _walk(lines, value, path, stop, option)
        else:
            option.keys.append(Key(path, _plain(value), _comment(lines, key_node, value, stop)))


def parse(file: Path) -> Option:
    """Read one YAML file of conf/: its package, header comment, defaults list and keys."""
    text = file.read_text()
    lines = text.splitlines()
    rel = file.relative_to(CONF)
    package = ".".join(rel.parent.parts)
    header: list[str] = []
    end = 0
    for end, line in enumerate(lines):  # the header: the comment lines before the first key
        stripped = line.strip()
        if stripped.startswith("# @package"):
            package = stripped.removeprefix("# @package").strip()
        elif stripped.startswith("#"):
            header.append(stripped[1:].rstrip().removeprefix(" "))
        elif stripped:
            break
    else:
        end = len(lines)
    package = "" if package == "_global_" else package
    option = Option(file=rel, package=package, header=header)
    root = yaml.compose(text, Loader=LOADER)
    if root is not None:
        _walk(lines, root, (), end, option)
    return option


def discover() -> list[Option]:
    """config.yaml first, then every group's options, group by group."""
    files = sorted(CONF.rglob("*.yaml"), key=lambda p: (len(p.relative_to(CONF).parts) > 1, p.parent.as_posix(), p.stem))
    return [parse(file) for file in files]


def full_key(option: Option, path: tuple[str, ...]) -> str:
    """The key as written on the command line: the option's package, then its path."""
    return ".".join(([option.package] if option.package else []) + list(path))


def render_value(value: Any) -> str:
    """A default as YAML on one line (``null``, ``true``, ``[32, 64]``, ``${data.num_classes}``)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()


def _text(text: str) -> str:
    """Comment text safe in Markdown: no raw HTML, no emphasis."""
    return text.replace("<", "&lt;").replace("*", "\\*")


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _is_code(line: str) -> bool:
    return line.startswith("  ") or line.startswith(("python -m ", "ray start"))


def _header(lines: list[str]) -> list[str]:
    """The header comment: prose as paragraphs, command lines as code blocks, in order."""
    out: list[str] = []
    block: list[str] = []
    code = False
    for line in [*lines, None]:
        if line is None or _is_code(line) != code or not line.strip():
            if block:
                out += (["```bash", *block, "```", ""] if code else [" ".join(block), ""])
            block = []
            if line is None or not line.strip():
                continue
            code = _is_code(line)
        block.append(line.strip() if code else _text(line.strip()))
    return out


def _anchor(option: Option) -> str:
    """The heading id of an option: ``server-fedasync``, ``config``."""
    group = option.file.parent.as_posix()
    return option.file.stem if group == "." else f"{group.replace('/', '-')}-{option.file.stem}"


def _option_section(option: Option, default: str | None) -> list[str]:
    group = option.file.parent.as_posix()
    title = "`config.yaml` (the primary config)" if group == "." else f"`{group}={option.file.stem}`"
    if default == option.file.stem:
        title += " (default)"
    package = option.package or "_global_"
    out = [f"### {title} {{ #{_anchor(option)} }}", "", f"File `conf/{option.file.as_posix()}`, package `{package}`.", ""]
    out += _header(option.header)
    if option.defaults:
        out += ["| defaults list entry | comment |", "|---|---|"]
        out += [f"| {_code(entry)} | {_cell(comment)} |" for entry, comment in option.defaults]
        out.append("")
    out += [f"- `{full_key(option, path)}`: {_text(comment)}" for path, comment in option.nodes]
    if option.nodes:
        out.append("")
    if option.keys:
        overlay = not option.package and group != "."  # an experiment: the values it sets over the others
        out += [f"| key | {'value it sets' if overlay else 'default'} | comment |", "|---|---|---|"]
        out += [f"| {_code(full_key(option, k.path))} | {_code(render_value(k.default))} | {_cell(k.comment)} |" for k in option.keys]
    else:
        out.append("No keys: the class takes no arguments.")
    out.append("")
    return out


def _group_defaults(primary: Option) -> dict[str, str]:
    """group -> the option config.yaml selects by default."""
    result = {}
    for entry, _ in primary.defaults:
        if ":" in entry:
            group, value = (part.strip() for part in entry.split(":", 1))
            result[group] = value
    return result


def generate() -> str:
    """The whole page, as Markdown."""
    options = discover()
    primary = next(option for option in options if option.file == Path("config.yaml"))
    defaults = _group_defaults(primary)
    groups: dict[str, list[Option]] = {}
    for option in options:
        if option is not primary:
            groups.setdefault(option.file.parent.as_posix(), []).append(option)

    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from conf/ by docs/gen_config_reference.py at every `make docs`: edit the YAML files, not this page. -->",
        "",
        "Every config group, option and key of `conf/`, with its default and the comment beside",
        "it in the YAML file. This page is generated from the files at every `make docs`, so it",
        "is always the configuration you run. What the keys mean together, the allowed values",
        "and examples are in the [configuration guide](configuration.md).",
        "",
        "A key is set on the command line as `key=value` (`server.aggregator.alpha=0.9`), an",
        "option is chosen as `group=option` (`server=fedbuff`). A group that is not in",
        "`config.yaml`'s defaults list is added with `+group=option`.",
        "",
        "| group | options | default |",
        "|---|---|---|",
    ]
    for group, members in groups.items():
        names = ", ".join(f"[`{o.file.stem}`](#{_anchor(o)})" for o in members)
        out.append(f"| `{group}` | {names} | {_code(defaults.get(group, ''))} |")
    out += ["", "## Top level", ""]
    out += _option_section(primary, None)
    for group, members in groups.items():
        out += [f"## `{group}`", ""]
        for option in members:
            out += _option_section(option, defaults.get(group))
    return "\n".join(out).rstrip() + "\n"


# ---- MkDocs hooks -------------------------------------------------------------------


def on_files(files, config):  # noqa: ANN001, ANN201 (MkDocs hook)
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=generate()))
    return files


if __name__ == "__main__":
    sys.stdout.write(generate())
