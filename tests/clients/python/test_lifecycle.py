"""The generated Python client (openapi-python-client, package
`coditect_api`) against a running issuer: every operation of the spec, and
the license lifecycle an integrator goes through.

Run by tests/tests/clients_e2e.rs, with:
    CODITECT_URL     the issuer
    SPEC             schemas/openapi.json (the operations to cover)
    BUYER_EMAIL      an account whose organization bought a license,
    BUYER_PASSWORD   and its password
    LICENSE_KEY      that license's key
    PYTHONPATH       the folder holding the generated `coditect_api`
"""

import json
import os
import re
import secrets
import unittest
from http import HTTPStatus

from coditect_api import AuthenticatedClient, Client
from coditect_api.api.auth import (
    cli_token,
    device_code,
    device_token,
    login,
    logout,
    new_password,
    request_password_reset,
    signup,
    verify_email,
)
from coditect_api.api.billing import billing_checkout, billing_portal
from coditect_api.api.health import healthz, readyz
from coditect_api.api.keys import list_keys
from coditect_api.api.licenses import activate, deactivate, features, list_licenses, validate
from coditect_api.models import (
    ActivateRequest,
    BillingInterval,
    CheckoutRequest,
    CliTokenRequest,
    DeactivateRequest,
    DeviceTokenRequest,
    LoginRequest,
    NewPasswordRequest,
    PasswordResetRequest,
    PlanId,
    Problem,
    SignupRequest,
    ValidateRequest,
    VerifyEmailRequest,
)

URL = os.environ["CODITECT_URL"]
PASSWORD = "correct horse battery staple"

# (METHOD, path) of every request the suite sent.
CALLED = set()


def _record(request):
    CALLED.add((request.method.lower(), request.url.path))


def _options():
    # An answer with a status the spec does not list raises (UnexpectedStatus).
    return {
        "raise_on_unexpected_status": True,
        "httpx_args": {"event_hooks": {"request": [_record]}},
    }


# Every client made, closed at the end.
CLIENTS = []


def _made(client):
    CLIENTS.append(client)
    return client


def public():
    return _made(Client(base_url=URL, **_options()))


def session(token):
    return _made(AuthenticatedClient(base_url=URL, token=token, **_options()))


def license_key_client(key):
    return _made(
        AuthenticatedClient(
            base_url=URL, token=key, prefix="", auth_header_name="X-License-Key", **_options()
        )
    )


def tearDownModule():
    for client in CLIENTS:
        client.get_httpx_client().close()


def problem_of(response, status, code):
    """The problem document of a refusal, as the client read it."""
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, Problem), response.parsed
    assert response.parsed.code == code, response.parsed
    assert response.parsed.status == int(status)
    return response.parsed


class Lifecycle(unittest.TestCase):
    """One run through the API, in order (unittest sorts the tests by name)."""

    state = {}

    def test_1_probes_and_keys(self):
        c = public()
        self.assertEqual(healthz.sync_detailed(client=c).parsed.status, "ok")
        self.assertEqual(readyz.sync_detailed(client=c).parsed.status, "ready")
        keys = list_keys.sync_detailed(client=c)
        self.assertEqual(keys.status_code, HTTPStatus.OK)
        self.assertEqual(keys.parsed.keys[0].kty, "OKP")
        self.assertEqual(keys.parsed.keys[0].crv, "Ed25519")

    def test_2_new_account(self):
        c = public()
        email = f"py-{secrets.token_hex(4)}@example.com"
        r = signup.sync_detailed(
            client=c,
            body=SignupRequest(email=email, password=PASSWORD, company_name="Py Client Ltd"),
        )
        self.assertEqual(r.status_code, HTTPStatus.ACCEPTED)
        self.assertEqual(r.parsed.email, email)
        r = login.sync_detailed(client=c, body=LoginRequest(email=email, password=PASSWORD))
        self.assertEqual(r.status_code, HTTPStatus.OK)
        self.assertEqual(r.parsed.token_type, "Bearer")
        s = session(r.parsed.access_token)
        self.assertEqual(list_licenses.sync_detailed(client=s).parsed.licenses, [])
        # Refused: no subscription yet, so no billing portal.
        problem_of(billing_portal.sync_detailed(client=s), HTTPStatus.CONFLICT, "no_billing_account")
        r = billing_checkout.sync_detailed(
            client=s, body=CheckoutRequest(plan=PlanId.PILOT_STARTER, interval=BillingInterval.MONTH)
        )
        self.assertEqual(r.status_code, HTTPStatus.OK)
        self.assertTrue(r.parsed.url.startswith("http"))
        self.assertTrue(r.parsed.session_id)
        # The mailed links' operations, with a token that is no link's.
        problem_of(
            verify_email.sync_detailed(client=c, body=VerifyEmailRequest(token="no-such-link")),
            HTTPStatus.NOT_FOUND,
            "link_invalid",
        )
        r = request_password_reset.sync_detailed(client=c, body=PasswordResetRequest(email=email))
        self.assertEqual(r.status_code, HTTPStatus.ACCEPTED)
        problem_of(
            new_password.sync_detailed(
                client=c, body=NewPasswordRequest(token="no-such-link", password="a new long passphrase")
            ),
            HTTPStatus.NOT_FOUND,
            "link_invalid",
        )
        # Signing out ends the session.
        self.assertEqual(logout.sync_detailed(client=s).status_code, HTTPStatus.NO_CONTENT)
        problem_of(list_licenses.sync_detailed(client=s), HTTPStatus.UNAUTHORIZED, "unauthorized")

    def test_3_license_lifecycle(self):
        c = public()
        key = os.environ["LICENSE_KEY"]
        machine = secrets.token_hex(32)
        # Sign in as the buyer and find the license.
        r = login.sync_detailed(
            client=c,
            body=LoginRequest(email=os.environ["BUYER_EMAIL"], password=os.environ["BUYER_PASSWORD"]),
        )
        self.assertEqual(r.status_code, HTTPStatus.OK)
        s = session(r.parsed.access_token)
        licenses = list_licenses.sync_detailed(client=s).parsed.licenses
        self.assertEqual(len(licenses), 1)
        summary = licenses[0].license_  # `license` is a Python builtin
        self.assertEqual(summary.key_hint, key[-4:])
        self.assertEqual(summary.status, "active")
        # Activate this machine: a seat and a token.
        r = activate.sync_detailed(
            client=c,
            body=ActivateRequest(license_key=key, hardware_id=machine, machine_name="py-client"),
        )
        self.assertEqual(r.status_code, HTTPStatus.CREATED)
        self.assertEqual(r.parsed.activation.status, "active")
        self.assertEqual(r.parsed.license_.devices_used, 1)
        self.assertTrue(r.parsed.token.token)
        # Again: the same seat.
        r = activate.sync_detailed(client=c, body=ActivateRequest(license_key=key, hardware_id=machine))
        self.assertEqual(r.status_code, HTTPStatus.OK)
        self.assertEqual(r.parsed.license_.devices_used, 1)
        # Renew the token.
        r = validate.sync_detailed(
            client=c, body=ValidateRequest(license_key=key, hardware_id=machine, client_version="py-1")
        )
        self.assertEqual(r.status_code, HTTPStatus.OK)
        self.assertRegex(r.parsed.token.token, r"^[A-Za-z0-9_-]+$")
        # The entitlements, by the key alone.
        r = features.sync_detailed(client=license_key_client(key))
        self.assertEqual(r.status_code, HTTPStatus.OK)
        self.assertEqual(r.parsed.tier, summary.tier)
        self.assertEqual(r.parsed.entitlements.max_devices, summary.entitlements.max_devices)
        problem_of(
            features.sync_detailed(client=license_key_client("CODITECT-PILOT-2222-2222-2222")),
            HTTPStatus.NOT_FOUND,
            "license_not_found",
        )
        # Free the seat; a renewal is then refused with its own code.
        r = deactivate.sync_detailed(
            client=c, body=DeactivateRequest(license_key=key, hardware_id=machine)
        )
        self.assertEqual(r.status_code, HTTPStatus.OK)
        self.assertEqual(r.parsed.activation.status, "deactivated")
        self.assertEqual(r.parsed.license_.devices_used, 0)
        refused = problem_of(
            validate.sync_detailed(client=c, body=ValidateRequest(license_key=key, hardware_id=machine)),
            HTTPStatus.FORBIDDEN,
            "not_activated",
        )
        self.assertIn("activate", refused.detail)
        # A field the server refuses is named.
        bad = problem_of(
            activate.sync_detailed(client=c, body=ActivateRequest(license_key=key, hardware_id="xyz")),
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        self.assertEqual(bad.field, "hardware_id")
        # The buyer's billing: one subscription, and its portal.
        problem_of(
            billing_checkout.sync_detailed(
                client=s, body=CheckoutRequest(plan=PlanId.PILOT_PROFESSIONAL, interval=BillingInterval.YEAR)
            ),
            HTTPStatus.CONFLICT,
            "already_subscribed",
        )
        r = billing_portal.sync_detailed(client=s)
        self.assertEqual(r.status_code, HTTPStatus.OK)
        self.assertTrue(r.parsed.url.startswith("http"))

    def test_4_cli_sign_ins(self):
        c = public()
        r = device_code.sync_detailed(client=c)
        self.assertEqual(r.status_code, HTTPStatus.OK)
        self.assertTrue(r.parsed.verification_uri.endswith("/device"))
        self.assertIn(r.parsed.user_code, r.parsed.verification_uri_complete)
        poll = DeviceTokenRequest(device_code=r.parsed.device_code)
        # Nobody approved it yet; polling again at once is too soon.
        problem_of(device_token.sync_detailed(client=c, body=poll), HTTPStatus.CONFLICT, "authorization_pending")
        problem_of(device_token.sync_detailed(client=c, body=poll), HTTPStatus.CONFLICT, "slow_down")
        problem_of(
            device_token.sync_detailed(client=c, body=DeviceTokenRequest(device_code="no-such-code")),
            HTTPStatus.NOT_FOUND,
            "code_invalid",
        )
        problem_of(
            cli_token.sync_detailed(
                client=c,
                body=CliTokenRequest(
                    code="no-such-code",
                    code_verifier="v" * 43,
                    redirect_uri="http://127.0.0.1:49152/callback",
                ),
            ),
            HTTPStatus.NOT_FOUND,
            "code_invalid",
        )

    def test_9_every_operation_was_called(self):
        with open(os.environ["SPEC"], encoding="utf-8") as f:
            spec = json.load(f)
        missing = []
        for path, item in spec["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
            for method, op in item.items():
                if not any(m == method and pattern.match(p) for m, p in CALLED):
                    missing.append(op["operationId"])
        self.assertEqual(missing, [], "operations the Python client suite did not call")
        print(f"python client: {len(CALLED)} operations called")


if __name__ == "__main__":
    unittest.main(verbosity=2)
