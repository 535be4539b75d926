#!/usr/bin/env python3
"""test-openapi.py ORCHD OPENAPI_YAML [PROTO_DUMP AGENT_PROTOCOL_MD]: proto/openapi.yaml
describes exactly orchd's routes, and proto/'s wire contracts.

Runs `ORCHD routes` (one "METHOD /path" line per route of server/api-routes.c), loads the
OpenAPI document, and checks that both hold the same (METHOD, path) pairs, and that the
document is sane: OpenAPI 3.1, every operation with a unique operationId, responses and
an explicit security, every path parameter declared, every $ref resolving, and no key
outside the keywords of its object (unknown_keys()). Prints one line per check and each
mismatch, ends with "N passed, M failed", exits 1 on a failure.

With PROTO_DUMP (tests/api/proto-dump.c, which prints proto/'s tables as JSON) it also
checks that every message table of the agent protocol and its schema in the document agree
(members, types, nullability, required, bounds, enums, unknown members), that the problem
types are the spec's, that every agent-protocol route declares the version header, and
that AGENT_PROTOCOL_MD's table of limits is the one proto/ defines (contract_*()).
"""

import json

import re
import subprocess
import sys

import yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/agents/register"),
}

passed = 0
failed = 0


def check(name, problems):
    """Record one check: it passes when problems is empty; print each problem."""
    global passed, failed
    if problems:
        failed += 1
        print(f"FAIL {name}")
        for p in problems:
            print(f"     {p}")
    else:
        passed += 1
        print(f"ok   {name}")


def code_routes(orchd):
    out = subprocess.run([orchd, "routes"], check=True, capture_output=True, text=True).stdout
    routes = set()
    for line in out.splitlines():
        if not line.strip():
            continue
        method, _, path = line.strip().partition(" ")
        # The admin console's files (server/api-console.c) are web pages, not the API.
        if path.strip() == "/console" or path.strip().startswith("/console/"):
            continue
        routes.add((method.upper(), path.strip()))
    return routes


def operations(spec):
    """Yield (METHOD, path, path_item, operation) for every operation of the document."""
    paths = spec.get("paths") or {}
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            op = item.get(method)
            if op is not None:
                yield method.upper(), path, item, op


def resolve_pointer(doc, ref):
    """Follow a local JSON pointer ("#/a/b~1c"); raise KeyError when it does not resolve."""
    if not ref.startswith("#"):
        raise KeyError("not a local reference")
    node = doc
    pointer = ref[1:]
    if pointer == "":
        return node
    if not pointer.startswith("/"):
        raise KeyError("not a JSON pointer")
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise KeyError(token)
    return node


def all_refs(node, where="#"):
    """Yield (location, ref) for every "$ref" string in the document, examples excluded
    (an example value is data, where a "$ref" key would be literal)."""
    if isinstance(node, dict):
        for k, v in node.items():
            loc = f"{where}/{str(k).replace('~', '~0').replace('/', '~1')}"
            if k == "$ref" and isinstance(v, str):
                yield where, v
            elif k in ("example",) or (k == "value" and "/examples/" in where):
                continue
            else:
                yield from all_refs(v, loc)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from all_refs(v, f"{where}/{i}")


def deref(spec, node, depth=0):
    """node itself, or what its $ref points at (following chains)."""
    while isinstance(node, dict) and "$ref" in node and depth < 20:
        try:
            node = resolve_pointer(spec, node["$ref"])
        except KeyError:
            return {}
        depth += 1
    return node


# The keywords each kind of object may hold (OpenAPI 3.1 and JSON Schema 2020-12, which 3.1
# schemas are); "x-" extensions are allowed everywhere. A key outside these is almost always a
# YAML slip rather than intent: in a flow mapping, `{type: string, description: Ends (UTC, ms).}`
# splits at the comma and makes "ms)." a key, and the description says less than was written.
SCHEMA_KEYWORDS = frozenset("""
    $schema $id $ref $anchor $dynamicRef $dynamicAnchor $vocabulary $comment $defs
    allOf anyOf oneOf not if then else dependentSchemas prefixItems items contains properties
    patternProperties additionalProperties propertyNames unevaluatedItems unevaluatedProperties
    type const enum multipleOf maximum exclusiveMaximum minimum exclusiveMinimum maxLength
    minLength pattern maxItems minItems uniqueItems maxContains minContains maxProperties
    minProperties required dependentRequired format contentEncoding contentMediaType
    contentSchema title description default deprecated readOnly writeOnly examples
    discriminator xml externalDocs example""".split())
REFERENCE_KEYWORDS = frozenset(("$ref", "summary", "description"))
HEADER_KEYWORDS = frozenset("""
    description required deprecated style explode schema example examples content""".split())
PARAMETER_KEYWORDS = HEADER_KEYWORDS | {"name", "in", "allowEmptyValue", "allowReserved"}
MEDIA_TYPE_KEYWORDS = frozenset(("schema", "example", "examples", "encoding"))
RESPONSE_KEYWORDS = frozenset(("description", "headers", "content", "links"))
REQUEST_BODY_KEYWORDS = frozenset(("description", "content", "required"))
OPERATION_KEYWORDS = frozenset("""
    tags summary description externalDocs operationId parameters requestBody responses
    callbacks deprecated security servers""".split())
# Keywords whose value is data, where null is a value like any other.
DATA_KEYWORDS = frozenset(("default", "const", "example"))


def unknown_keys(spec):
    """Yield "location: problem" for every key of a schema, parameter, header, media type,
    response, request body or operation object that is not a keyword of that object, and
    for every keyword left without a value (`{description: a, type}` makes type null)."""

    def keys_of(node, where, allowed):
        if not isinstance(node, dict):
            return
        if "$ref" in node and allowed is not SCHEMA_KEYWORDS:
            allowed = REFERENCE_KEYWORDS
        for k, v in node.items():
            if isinstance(k, str) and k.startswith("x-"):
                continue
            if k not in allowed:
                yield f"{where}: unknown key {str(k)!r}"
            elif v is None and k not in DATA_KEYWORDS:
                yield f"{where}: {k} has no value"

    def at(where, key):
        return f"{where}/{str(key).replace('~', '~0').replace('/', '~1')}"

    def schema(node, where):
        if isinstance(node, bool):
            return
        yield from keys_of(node, where, SCHEMA_KEYWORDS)
        if not isinstance(node, dict):
            return
        for k in ("not", "if", "then", "else", "items", "contains", "additionalProperties",
                  "propertyNames", "unevaluatedItems", "unevaluatedProperties", "contentSchema"):
            if k in node:
                yield from schema(node[k], at(where, k))
        for k in ("allOf", "anyOf", "oneOf", "prefixItems"):
            for i, sub in enumerate(node.get(k) or []):
                yield from schema(sub, at(at(where, k), i))
        for k in ("properties", "patternProperties", "$defs", "dependentSchemas"):
            sub = node.get(k)
            for name, s in (sub.items() if isinstance(sub, dict) else ()):
                yield from schema(s, at(at(where, k), name))

    def content(node, where):
        for mt, m in (node.items() if isinstance(node, dict) else ()):
            w = at(where, mt)
            yield from keys_of(m, w, MEDIA_TYPE_KEYWORDS)
            if isinstance(m, dict) and "schema" in m:
                yield from schema(m["schema"], at(w, "schema"))
            enc = m.get("encoding") if isinstance(m, dict) else None
            for name, e in (enc.items() if isinstance(enc, dict) else ()):
                for h, hv in ((e.get("headers") or {}).items() if isinstance(e, dict) else ()):
                    yield from header(hv, at(at(at(at(w, "encoding"), name), "headers"), h))

    def header(node, where, allowed=HEADER_KEYWORDS):
        yield from keys_of(node, where, allowed)
        if isinstance(node, dict) and "$ref" not in node:
            if "schema" in node:
                yield from schema(node["schema"], at(where, "schema"))
            yield from content(node.get("content"), at(where, "content"))

    def parameters(node, where):
        for i, prm in enumerate(node if isinstance(node, list) else []):
            yield from header(prm, at(where, i), PARAMETER_KEYWORDS)

    def response(node, where):
        yield from keys_of(node, where, RESPONSE_KEYWORDS)
        if isinstance(node, dict) and "$ref" not in node:
            hs = node.get("headers")
            for h, hv in (hs.items() if isinstance(hs, dict) else ()):
                yield from header(hv, at(at(where, "headers"), h))
            yield from content(node.get("content"), at(where, "content"))

    def request_body(node, where):
        yield from keys_of(node, where, REQUEST_BODY_KEYWORDS)
        if isinstance(node, dict) and "$ref" not in node:
            yield from content(node.get("content"), at(where, "content"))

    def section(name):
        sec = (spec.get("components") or {}).get(name)
        return sec.items() if isinstance(sec, dict) else ()

    for name, s in section("schemas"):
        yield from schema(s, f"#/components/schemas/{name}")
    for name, prm in section("parameters"):
        yield from header(prm, f"#/components/parameters/{name}", PARAMETER_KEYWORDS)
    for name, h in section("headers"):
        yield from header(h, f"#/components/headers/{name}")
    for name, r in section("responses"):
        yield from response(r, f"#/components/responses/{name}")
    for name, b in section("requestBodies"):
        yield from request_body(b, f"#/components/requestBodies/{name}")
    for path, item in (spec.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        w = at("#/paths", path)
        yield from parameters(item.get("parameters"), at(w, "parameters"))
        for method in HTTP_METHODS:
            op = item.get(method)
            if op is None:
                continue
            ow = at(w, method)
            yield from keys_of(op, ow, OPERATION_KEYWORDS)
            if not isinstance(op, dict):
                continue
            yield from parameters(op.get("parameters"), at(ow, "parameters"))
            if "requestBody" in op:
                yield from request_body(op["requestBody"], at(ow, "requestBody"))
            rs = op.get("responses")
            for code_, r in (rs.items() if isinstance(rs, dict) else ()):
                yield from response(r, at(at(ow, "responses"), code_))


# --- proto/ against the spec --------------------------------------------------------------

INT64_MAX = 2**63 - 1
BASE_TYPES = {
    "string": ("string", None), "integer": ("integer", None), "number": ("number", None),
    "boolean": ("boolean", None), "object": ("object", None), "array": ("array", None),
    "uuid": ("string", "uuid"), "date-time": ("string", "date-time"), "any": (None, None),
}
BOUND_KEYS = {
    "string": ("minLength", "maxLength"), "array": ("minItems", "maxItems"),
    "object": ("minProperties", "maxProperties"), "integer": ("minimum", "maximum"),
    "number": ("minimum", "maximum"),
}


def effective(spec, node):
    """A property's schema: what its $ref points at, with the property's own keywords over
    it (OpenAPI 3.1 allows keywords beside $ref)."""
    if not isinstance(node, dict):
        return {}
    eff = dict(deref(spec, node)) if "$ref" in node else {}
    eff.update({k: v for k, v in node.items() if k != "$ref"})
    return eff


def compare_field(spec, where, f, node):
    """Problems between one table field (from proto-dump) and its property's schema."""
    problems = []
    eff = effective(spec, node)
    want_type, want_format = BASE_TYPES[f["type"]]
    t = eff.get("type")
    have = set(t if isinstance(t, list) else [t] if t else [])
    want = set()
    if want_type:
        want.add(want_type)
        if f["nullable"]:
            want.add("null")
    if have != want:
        problems.append(f"{where}: type {sorted(have) or 'any'} in the spec, "
                        f"{sorted(want) or 'any'} in proto/")
    if want_format and eff.get("format") != want_format:
        problems.append(f"{where}: format {eff.get('format')!r} in the spec, "
                        f"{want_format!r} in proto/")
    if "enum" in f:
        if set(eff.get("enum") or []) - {None} != set(f["enum"]):
            problems.append(f"{where}: enum {eff.get('enum')} in the spec, {f['enum']} in proto/")
    keys = BOUND_KEYS.get(f["type"])
    if keys:
        lo, hi = f["min"], f["max"]
        bounded = lo != 0 or hi != 0
        counted = f["type"] in ("string", "array", "object")
        # A count's minimum 0 says nothing; a number's minimum 0 does.
        want_lo = lo if bounded and (lo != 0 or not counted) else None
        want_hi = hi if bounded and hi not in (0, INT64_MAX) else None
        have_lo, have_hi = eff.get(keys[0]), eff.get(keys[1])
        if counted and have_lo == 0:
            have_lo = None
        if have_lo != want_lo:
            problems.append(f"{where}: {keys[0]} {have_lo} in the spec, {want_lo} in proto/")
        if have_hi != want_hi:
            problems.append(f"{where}: {keys[1]} {have_hi} in the spec, {want_hi} in proto/")
    return problems


def flatten(spec, node):
    """A schema with the properties and required members of its allOf parts merged in
    (AgentCreated is AgentFields and its credential)."""
    s = dict(deref(spec, node))
    props, req = dict(s.get("properties") or {}), list(s.get("required") or [])
    for part in s.get("allOf") or []:
        p = flatten(spec, part)
        props.update(p.get("properties") or {})
        req += [k for k in p.get("required") or [] if k not in req]
    if props:
        s["properties"] = props
    if req:
        s["required"] = req
    return s


def compare_message(spec, msg):
    """Problems between one message table and components/schemas/<name>."""
    name = msg["name"]
    schemas = (spec.get("components") or {}).get("schemas") or {}
    if name not in schemas:
        return [f"{name}: proto/ has the table, the spec no schema #/components/schemas/{name}"]
    s = flatten(spec, schemas[name])
    problems = []
    props = s.get("properties") or {}
    table = {f["name"]: f for f in msg["fields"]}
    for k in sorted(set(table) - set(props)):
        problems.append(f"{name}.{k}: in proto/'s table, not in the spec")
    # A partial table lists the members its reader uses, of a document that has more.
    for k in sorted(set(props) - set(table)) if not msg.get("partial") else []:
        problems.append(f"{name}.{k}: in the spec, not in proto/'s table")
    if not msg["allow_unknown"] and s.get("additionalProperties") is not False:
        problems.append(f"{name}: proto/ refuses unknown members, the spec must say "
                        "additionalProperties: false")
    req_t = {k for k, f in table.items() if f["required"]}
    req_s = set(s.get("required") or [])
    for k in sorted(req_t - req_s):
        problems.append(f"{name}.{k}: required in proto/, optional in the spec")
    for k in sorted(req_s - req_t) if not msg.get("partial") else []:
        problems.append(f"{name}.{k}: required in the spec, optional in proto/")
    for k in sorted(set(table) & set(props)):
        problems.extend(compare_field(spec, f"{name}.{k}", table[k], props[k]))
    return problems


def contract_checks(spec, dump, doc_path):
    agent = [m for m in dump["messages"] if m["family"] == "agent"]
    for m in agent:
        check(f"proto/ table {m['name']} agrees with the spec", compare_message(spec, m))

    problem = deref(spec, ((spec.get("components") or {}).get("schemas") or {}).get("Problem"))
    types = set(((problem.get("properties") or {}).get("type") or {}).get("enum") or [])
    want = set(dump["problem_types"])
    check("the spec's problem types are proto/problem.c's",
          [f"{t}: in proto/problem.c, not in the spec's Problem.type" for t in sorted(want - types)]
          + [f"{t}: in the spec's Problem.type, not in proto/problem.c"
             for t in sorted(types - want)])

    # The version header: one parameter, on every route of the agent protocol.
    v = dump["version"]
    problems = []
    prm = ((spec.get("components") or {}).get("parameters") or {}).get("OrchProtocol")
    if not isinstance(prm, dict):
        problems.append("no #/components/parameters/OrchProtocol")
    else:
        sch = prm.get("schema") or {}
        if (prm.get("name"), prm.get("in")) != (v["header"], "header"):
            problems.append(f"OrchProtocol: is {prm.get('in')} {prm.get('name')}, "
                            f"want header {v['header']}")
        if (sch.get("minimum"), sch.get("maximum")) != (v["min"], v["max"]):
            problems.append(f"OrchProtocol: versions {sch.get('minimum')}..{sch.get('maximum')}"
                            f" in the spec, {v['min']}..{v['max']} in proto/agent.h")
    routes = set(dump["routes"])
    for m, p, item, op in operations(spec):
        if p not in routes:
            continue
        refs = [x.get("$ref") for x in list(item.get("parameters") or [])
                + list(op.get("parameters") or []) if isinstance(x, dict)]
        if "#/components/parameters/OrchProtocol" not in refs:
            problems.append(f"{m} {p}: a route of the agent protocol without the OrchProtocol "
                            "parameter")
    documented = {p for _, p, _, _ in operations(spec)}
    for p in sorted(routes - documented):
        problems.append(f"{p}: a route of proto/agent.h not in the spec")
    check("every agent-protocol route declares the protocol version header", problems)

    # docs/agent-protocol.md states proto/'s limits, between its two markers, as generated.
    if doc_path:
        want_lines = [f"| `{k}` | {val} |" for k, val in dump["limits"]]
        try:
            with open(doc_path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            text, problems = "", [str(e)]
        m = re.search(r"<!-- proto-limits:begin -->\n(.*?)<!-- proto-limits:end -->", text,
                      re.S)
        problems = []
        if not m:
            problems.append(f"{doc_path}: no <!-- proto-limits:begin --> ... end --> section")
        else:
            have = [ln for ln in m.group(1).splitlines() if ln.startswith("| `")]
            if have != want_lines:
                problems.append(f"{doc_path}: the limits table differs from proto/agent.h; "
                                "it should read:")
                problems.extend(want_lines)
        check("docs/agent-protocol.md states proto/'s limits", problems)


def main():
    if len(sys.argv) not in (3, 4, 5):
        print("usage: test-openapi.py ORCHD OPENAPI_YAML [PROTO_DUMP [AGENT_PROTOCOL_MD]]",
              file=sys.stderr)
        return 2
    orchd, spec_path = sys.argv[1], sys.argv[2]
    dump_exe = sys.argv[3] if len(sys.argv) > 3 else None
    doc_path = sys.argv[4] if len(sys.argv) > 4 else None

    try:
        with open(spec_path, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        spec = e
    if not isinstance(spec, dict):
        why = spec if isinstance(spec, Exception) else "the document is not a mapping"
        check(f"{spec_path} loads", [str(why)])
        print(f"{passed} passed, {failed} failed")
        return 1

    # 1. The document is OpenAPI 3.1.
    version = str(spec.get("openapi", ""))
    check("openapi version is 3.1.x",
          [] if version.startswith("3.1") else [f"openapi is '{version}', want 3.1.x"])

    # 2, 3. Routes: code and spec hold the same (METHOD, path) pairs.
    try:
        code = code_routes(orchd)
        code_err = []
    except (OSError, subprocess.CalledProcessError) as e:
        code, code_err = set(), [f"cannot run '{orchd} routes': {e}"]
    ops = list(operations(spec))
    documented = {(m, p) for m, p, _, _ in ops}
    check("every route of orchd is in the spec", code_err + [
        f"{m} {p}: route in the code (orchd routes) but not in {spec_path}"
        for m, p in sorted(code - documented, key=lambda r: (r[1], r[0]))])
    check("every operation of the spec is a route of orchd", code_err + [
        f"{m} {p}: in {spec_path} but not a route in the code (orchd routes)"
        for m, p in sorted(documented - code, key=lambda r: (r[1], r[0]))])
    if not code_err and not code:
        check("orchd lists routes", ["'orchd routes' printed nothing"])

    # 4. operationId on every operation, and unique.
    problems, seen = [], {}
    for m, p, _, op in ops:
        oid = op.get("operationId") if isinstance(op, dict) else None
        if not oid:
            problems.append(f"{m} {p}: no operationId")
        elif oid in seen:
            problems.append(f"{m} {p}: operationId '{oid}' also used by {seen[oid]}")
        else:
            seen[oid] = f"{m} {p}"
    check("every operation has a unique operationId", problems)

    # 5. responses on every operation, with a success status.
    problems = []
    for m, p, _, op in ops:
        responses = op.get("responses") if isinstance(op, dict) else None
        if not isinstance(responses, dict) or not responses:
            problems.append(f"{m} {p}: no responses")
        elif not any(str(code_).startswith("2") for code_ in responses):
            problems.append(f"{m} {p}: no 2xx response")
    check("every operation has responses, one of them 2xx", problems)

    # 6. security: explicit on every operation; empty exactly on the public routes.
    problems = []
    for m, p, _, op in ops:
        sec = op.get("security") if isinstance(op, dict) else None
        if sec is None:
            problems.append(f"{m} {p}: no explicit security")
        elif (m, p) in PUBLIC_ROUTES and sec != []:
            problems.append(f"{m} {p}: a public route must have security: []")
        elif (m, p) not in PUBLIC_ROUTES and not sec:
            problems.append(f"{m} {p}: needs bearerAuth security")
    check("security is explicit, and empty only on public routes", problems)

    # 7. Every {param} of a path is declared as a required path parameter.
    problems = []
    for m, p, item, op in ops:
        declared = set()
        for prm in list(item.get("parameters") or []) + list(op.get("parameters") or []):
            prm = deref(spec, prm)
            if isinstance(prm, dict) and prm.get("in") == "path":
                declared.add(prm.get("name"))
                if prm.get("required") is not True:
                    problems.append(f"{m} {p}: path parameter '{prm.get('name')}' not required")
        wanted = {seg[1:-1] for seg in p.split("/") if seg.startswith("{") and seg.endswith("}")}
        for name in sorted(wanted - declared):
            problems.append(f"{m} {p}: path parameter '{name}' not declared")
        for name in sorted(declared - wanted):
            problems.append(f"{m} {p}: declares path parameter '{name}' not in the path")
    check("path parameters match the path templates", problems)

    # 8. Every $ref resolves.
    problems = []
    for where, ref in all_refs(spec):
        try:
            resolve_pointer(spec, ref)
        except KeyError:
            problems.append(f"{where}: $ref '{ref}' does not resolve")
    check("every $ref resolves", problems)

    # 9. No key outside the OpenAPI 3.1 / JSON Schema keywords (a YAML slip, not intent).
    check("schema, parameter and operation objects hold only their keywords",
          list(unknown_keys(spec)))

    # 10. proto/'s tables and the spec's schemas agree.
    if dump_exe:
        try:
            dump = json.loads(subprocess.run([dump_exe], check=True, capture_output=True,
                                             text=True).stdout)
        except (OSError, subprocess.CalledProcessError, ValueError) as e:
            dump = None
            check("proto-dump runs", [str(e)])
        if dump:
            contract_checks(spec, dump, doc_path)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
