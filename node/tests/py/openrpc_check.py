"""Check an OpenRPC document against the OpenRPC meta-schema (JSON Schema draft 7)
and check real answers against the document's own result schemas.

    python3 openrpc_check.py DOC META_SCHEMA SAMPLES

The OpenRPC meta-schema refers to the JSON Schema meta-schema by its id
(https://meta.json-schema.tools/); that file is read from beside META_SCHEMA
(json-schema-meta-schema.json), never fetched.

SAMPLES is a JSON object {method name: [result, ...]}: each result must validate
against that method's result schema, with the document's components in scope.
Prints one line per problem and exits 1 if there is any.
"""

import json
import os
import sys

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7


def main():
    doc = json.load(open(sys.argv[1]))
    meta = json.load(open(sys.argv[2]))
    samples = json.load(open(sys.argv[3]))
    problems = []
    beside = os.path.join(os.path.dirname(sys.argv[2]), "json-schema-meta-schema.json")
    json_schema = Resource.from_contents(json.load(open(beside)), default_specification=DRAFT7)
    registry = Registry().with_resources(
        [("https://meta.json-schema.tools", json_schema), ("https://meta.json-schema.tools/", json_schema)]
    )
    v = jsonschema.Draft7Validator(meta, registry=registry)
    for e in v.iter_errors(doc):
        problems.append(f"meta-schema: {'/'.join(map(str, e.absolute_path))}: {e.message}")
    by_name = {m["name"]: m for m in doc.get("methods", [])}
    for name, results in samples.items():
        m = by_name.get(name)
        if m is None:
            problems.append(f"{name}: not in the document")
            continue
        schema = dict(m["result"]["schema"])
        schema["components"] = doc.get("components", {})
        rv = jsonschema.Draft7Validator(schema)
        for i, r in enumerate(results):
            for e in rv.iter_errors(r):
                where = "/".join(map(str, e.absolute_path))
                problems.append(f"{name} result {i} at /{where}: {e.message}")
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
