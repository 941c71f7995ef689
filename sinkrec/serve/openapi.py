"""Print the service's OpenAPI schema: `python -m sinkrec.serve.openapi > docs/openapi.json`."""

import json

from .app import openapi_schema


def render() -> str:
    return json.dumps(openapi_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
