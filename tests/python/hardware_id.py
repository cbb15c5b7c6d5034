"""Computes CODITECT hardware ids in Python, with the standard library only:

    hardware_id = hmac.new(b"coditect-hardware-id-v1", machine_id, sha256).hexdigest()

usage: hardware_id.py IN_JSON OUT_JSON

IN_JSON is a list of machine ids (text, encoded as UTF-8 for the HMAC, used
exactly as given); OUT_JSON receives the list of hardware ids in the same
order. Standard library only (no package needs installing).
"""

import hashlib
import hmac
import json
import sys

HARDWARE_ID_KEY = b"coditect-hardware-id-v1"


def hardware_id(machine_id):
    return hmac.new(HARDWARE_ID_KEY, machine_id.encode("utf-8"), hashlib.sha256).hexdigest()


def main(argv):
    if len(argv) != 3:
        sys.exit(f"error: {__doc__}")
    with open(argv[1], "r", encoding="utf-8") as f:
        machine_ids = json.load(f)
    if not isinstance(machine_ids, list) or not all(isinstance(m, str) for m in machine_ids):
        sys.exit("error: IN_JSON must be a list of strings")
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump([hardware_id(m) for m in machine_ids], f)


if __name__ == "__main__":
    main(sys.argv)
