"""Message templates: sandboxed Jinja2 with undefined names as errors, checked at load time.

Context: `member` (member fields + metrics), `offer`, `event` (event-triggered playbooks),
`playbook`, `now` and `links` (config). `siyu check` rejects syntax errors and names
that do not exist before anything is rendered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import Problem
from engine.grammar.values import MEMBER_FIELDS, did_you_mean

if TYPE_CHECKING:
    from jinja2 import Template

    from engine.grammar.playbook import Playbook
    from engine.grammar.yamlsource import SourceMap

METRIC_FIELDS = ("avg_order_value", "total_spend", "order_count", "last_purchase_at", "habitual_platform")
MEMBER_CONTEXT_FIELDS = (*MEMBER_FIELDS, "tags", *METRIC_FIELDS)
COUPON_FIELDS = ("threshold", "discount", "valid_days", "valid_until")
OFFER_FIELDS = ("coupon", "by", "metric", "tier", "min")
PLAYBOOK_FIELDS = ("id", "name", "priority", "timezone")
EVENT_FIELDS = ("event_id", "type", "occurred_at", "attributes")
KNOWN_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "member": MEMBER_CONTEXT_FIELDS,
    "offer": OFFER_FIELDS,
    "playbook": PLAYBOOK_FIELDS,
    "event": EVENT_FIELDS,
}


def _finalize(value: Any) -> Any:
    return "" if value is None else value


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with each template's globals as one plain dict rather than a ChainMap over the
    environment's: Jinja copies the globals into every render's context, and copying a ChainMap
    cost more than the rest of rendering a short message. Nothing changes the globals later."""

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}


ENVIRONMENT = _Environment(undefined=StrictUndefined, autoescape=False, finalize=_finalize, keep_trailing_newline=True)


@lru_cache(maxsize=4096)
def compiled(source: str) -> Template:
    return ENVIRONMENT.from_string(source)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside `value` (a message payload), keeping its shape."""
    if isinstance(value, str):
        if "{" not in value:  # plain text (a template code, a fixed phrase): nothing to render
            return value
        return compiled(value).render(context)
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


def template_strings(playbook: Playbook) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(YAML path, template text) of every template in the playbook's channel steps."""
    for index, step in enumerate(playbook.channels):
        payload = step.message.model_dump(exclude_none=True)
        for key, value in payload.items():
            base = ("channels", index, step.channel, key)
            if isinstance(value, str):
                yield base, value
            elif isinstance(value, dict):
                for sub, text in value.items():
                    if isinstance(text, str):
                        yield (*base, sub), text


def _chain(node: nodes.Node) -> list[str] | None:
    """`member.city` → ['member', 'city']; None if the chain does not start at a name."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(
                node.arg.value, str):
            parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return parts[::-1]
        else:
            return None


def _attribute_problems(tree: nodes.Template, allowed_roots: set[str]) -> list[str]:
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    messages: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _chain(node)
        if not chain or len(chain) < 2 or chain[0] in assigned or chain[0] not in allowed_roots:
            continue
        root, attr = chain[0], chain[1]
        known = KNOWN_ATTRIBUTES.get(root)
        if known is not None and attr not in known:
            messages.append(f"`{root}.{attr}` does not exist{did_you_mean(attr, known)}")
        elif root == "offer" and attr == "coupon" and len(chain) > 2 and chain[2] not in COUPON_FIELDS:
            messages.append(f"`offer.coupon.{chain[2]}` does not exist{did_you_mean(chain[2], COUPON_FIELDS)}")
    return sorted(set(messages))


def attributes_read(text: str) -> set[tuple[str, str]]:
    """The (name, attribute) pairs a template reads: `{{ member.phone }}` and `{{ member["phone"] }}` read
    ('member', 'phone'). Empty for a template that does not parse (check_template reports it)."""
    try:
        tree = ENVIRONMENT.parse(text)
    except TemplateSyntaxError:
        return set()
    chains = (_chain(node) for node in tree.find_all((nodes.Getattr, nodes.Getitem)))
    return {(chain[0], chain[1]) for chain in chains if chain and len(chain) >= 2}


def context_names(playbook: Playbook) -> set[str]:
    names = {"member", "playbook", "now", "links"}
    if playbook.offer is not None:
        names.add("offer")
    if playbook.is_event_triggered:
        names.add("event")
    return names


def check_template(text: str, allowed: set[str]) -> list[str]:
    """Problems of one template text (syntax, unknown names and attributes)."""
    from jinja2 import meta

    try:
        tree = ENVIRONMENT.parse(text)
        undeclared = meta.find_undeclared_variables(tree)  # compiles it: an unknown filter or test fails here
    except TemplateSyntaxError as exc:  # TemplateAssertionError included
        where = f" (template line {exc.lineno})" if text.count("\n") else ""
        return [f"template syntax error: {exc.message}{where}"]
    messages = []
    for name in sorted(undeclared - allowed):
        if name == "offer":
            messages.append("`offer` is used but the playbook has no `offer`")
        elif name == "event":
            messages.append("`event` is only available to event-triggered playbooks")
        else:
            messages.append(f"unknown name `{name}`{did_you_mean(name, allowed)}; "
                            f"templates can use: {', '.join(sorted(allowed))}")
    # Jinja leaves an unknown test inside a condition to fail while rendering: say it now.
    messages += [f"unknown test `{node.name}`{did_you_mean(node.name, ENVIRONMENT.tests)}"
                 for node in tree.find_all(nodes.Test) if node.name not in ENVIRONMENT.tests]
    return messages + _attribute_problems(tree, allowed)


def check_playbook_templates(playbook: Playbook, source: SourceMap, file: str) -> list[Problem]:
    allowed = context_names(playbook)
    problems: list[Problem] = []
    for path, text in template_strings(playbook):
        line, col = source.locate(path) or (None, None)
        problems.extend(Problem(file, line, col, message) for message in check_template(text, allowed))
    return problems
