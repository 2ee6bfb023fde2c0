"""A minimal signed CloudStack request, to look at the raw HTTP answer (status, body bytes).

The `cs` client hides what the server actually sent (it unwraps envelopes and adds
``pagesize`` when it sees ``page``); these helpers send exactly the parameters given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests

from cloudstack_deploy.lab.simulator.signing import sign


@dataclass
class RawResponse:
    status: int
    text: str
    content_type: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    def body(self, command: str) -> Any:
        """The value under the one ``<command>response`` key (asserting it is the only key)."""
        data = self.json
        key = f"{command.lower()}response"
        assert list(data) == [key], data
        return data[key]


def signed_params(command: str, key: str, secret: str, **params: Any) -> dict[str, str]:
    """``params`` plus command/apiKey/response=json and the Java-exact signature."""
    out = {k: str(v) for k, v in params.items()}
    out.update(command=command, apiKey=key, response="json")
    out["signature"] = sign(out, secret)
    return out


def call(endpoint: str, command: str, key: str, secret: str, *, method: str = "GET",
         timeout: float = 10, **params: Any) -> RawResponse:
    """Send one signed request and return the raw answer, whatever its status."""
    data = signed_params(command, key, secret, **params)
    if method.upper() == "GET":
        resp = requests.get(endpoint, params=data, timeout=timeout)
    else:
        resp = requests.post(endpoint, data=data, timeout=timeout)
    return RawResponse(resp.status_code, resp.text, resp.headers.get("Content-Type", ""))
