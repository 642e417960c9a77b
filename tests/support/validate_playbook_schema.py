#!/usr/bin/python3
"""Validates playbooks against gptagent's JSON Schema with python3-jsonschema (draft 2020-12).

Usage: validate_playbook_schema.py SCHEMA PLAYBOOK...
The schema itself is checked against the draft's meta-schema first. Each playbook is read as the
YAML 1.2 core schema types scalars (as the agent's loader and editors' YAML language servers do):
only true/false are booleans, only digits are integers, `0000:01:00.0` and `on` stay strings.
Prints `PLAYBOOK: ok` or `PLAYBOOK: /json/pointer: message` for each error; exits 1 when any
playbook does not validate, 2 when the schema is not a valid schema.
"""
import json
import re
import sys

import jsonschema
import yaml


class CoreLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core resolution instead of YAML 1.1's."""


CoreLoader.yaml_implicit_resolvers = {}
for tag, pattern, first in [
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", list("~nN") + [""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^[-+]?[0-9]+$", list("-+0123456789")),
    ("tag:yaml.org,2002:float", r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$",
     list("-+.0123456789")),
]:
    CoreLoader.add_implicit_resolver(tag, re.compile(pattern), first)


def pointer(path):
    return "/" + "/".join(str(p) for p in path)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        print(f"{sys.argv[1]}: not a valid draft 2020-12 schema: {e.message}")
        return 2
    validator = jsonschema.Draft202012Validator(schema)
    bad = 0
    for path in sys.argv[2:]:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=CoreLoader)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if not errors:
            print(f"{path}: ok")
            continue
        bad += 1
        for e in errors:
            print(f"{path}: {pointer(e.absolute_path)}: {e.message}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
