"""Calls a client that PyPI pynettcp's codegen generated from a service's published metadata
(`python -m pynettcp.codegen URL -o CLIENT.py`), at the address that metadata names
(the generated module's DEFAULT_ADDRESS), as a user of the generated client would.

    python3 generated_client.py CLIENT.py

Calls Add(2, 3), Echo("through the gateway") and SafeDivide(1, 0), the last expected to raise
the generated ServiceFault with the declared CalcFault detail. Prints one JSON line:
{"address", "add", "echo", "fault": {"reason", "detail_name", "code"}}.
"""

import importlib.util
import json
import sys


def main():
    spec = importlib.util.spec_from_file_location("generated_calculator", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    # The generated client class: the one with the generated `_invoke`.
    client_class = next(
        value
        for value in vars(module).values()
        if isinstance(value, type) and hasattr(value, "_invoke")
    )
    out = {"address": module.DEFAULT_ADDRESS}
    with client_class() as client:
        out["add"] = client.add(2, 3)
        out["echo"] = client.echo("through the gateway")
        try:
            client.safe_divide(1, 0)
            out["fault"] = None
        except module.ServiceFault as fault:
            out["fault"] = {
                "reason": fault.reason,
                "detail_name": fault.detail_name,
                "code": getattr(fault.detail, "Code", None),
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
