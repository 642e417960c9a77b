#!/usr/bin/python3
"""The hosts an ansible-playbook run reaches for each --limit pattern, in the order it reaches them.

Usage: ansible_hosts.py INVENTORY PATTERN...  ->  JSON {pattern: {"hosts": [...]} or {"error": "..."}}

ansible-playbook --list-hosts prints a Python set (an order that changes with PYTHONHASHSEED), so
this asks Ansible's InventoryManager what a play on "all" gets under the limit (subset, then the
hosts of "all"): the order a run reaches them. One process for every pattern: Ansible's start-up
costs a second.
"""
import json
import sys

from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader

inventory = InventoryManager(loader=DataLoader(), sources=[sys.argv[1]])
answers = {}
for pattern in sys.argv[2:]:
    try:
        inventory.subset(None if pattern == "all" else pattern)
        inventory.clear_pattern_cache()
        answers[pattern] = {"hosts": [h.name for h in inventory.get_hosts("all")]}
    except Exception as e:  # an error of Ansible's (a bad pattern) is an answer too
        answers[pattern] = {"error": str(e)}
print(json.dumps(answers))
