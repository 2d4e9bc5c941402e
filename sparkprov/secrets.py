"""Which values are secrets: variables and environment variables named like one."""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE_KEY|_PASS$)", re.IGNORECASE)


# `jupyter_token_env: JUPYTER_TOKEN` names where a secret is, it is not one.
_REFERENCE_SUFFIXES = ("_env", "_var", "_name", "_file", "_path", "_dir")


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not name.lower().endswith(_REFERENCE_SUFFIXES)


def secrets_from_environment(environ: dict[str, str] | None = None) -> set[str]:
    """Values of variables whose names say they are secret (NGC_API_KEY, HF_TOKEN, ...)."""
    env = os.environ if environ is None else environ
    return {value for name, value in env.items() if is_secret_name(name) and value}
